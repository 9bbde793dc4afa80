package outbox

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Config tunes a Relay. The zero value of every field means its default.
type Config struct {
	// RelayID names this relay in the rows it leases (claimed_by). Default
	// "<hostname>-<pid>-<random>". Two relays must never share an id.
	RelayID string
	// ReleaseOnStart makes Run release, before its first claim, every lease RelayID
	// holds: with an id stable across restarts (hodei server's instance id, guarded by
	// its data directory's lock), the rows the previous run held when it died are due
	// again at once instead of after their lease and the reaper. Only for an id no
	// other live relay can have.
	ReleaseOnStart bool
	// BatchSize is the most rows one claim leases (default 500, at most 10,000).
	BatchSize int
	// Lease is how long a claim holds its rows; a relay that dies leaves them to the
	// reaper once it expires (default 30s). It must exceed the slowest batch.
	Lease time.Duration
	// PollInterval is the safety poll: the relay claims at least this often even when no
	// wake-up arrives (default 1s).
	PollInterval time.Duration
	// BaseBackoff and MaxBackoff bound the retry delay min(base·2^n, max) ± Jitter
	// (defaults 5s and 30m).
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// Jitter spreads each retry delay by ± this fraction (default 0.1; negative: none).
	Jitter float64
	// MaxAttempts is used for rows without their own max_attempts (default 5). After that
	// many failed attempts a command row goes to DEAD_LETTER. Event rows are never given
	// up for a failure that is not permanent (NATS unreachable, a stream without a
	// leader): an event is a fact already committed, and some start the only saga that
	// will ever act on it (job.worker_lost starts a recovery).
	MaxAttempts int
	// EventMaxBackoff caps the retry delay of event rows (default 30s), so that events
	// flow again soon after NATS is back, however long it was away.
	EventMaxBackoff time.Duration
	// ReapInterval is how often expired leases are returned (default 10s).
	ReapInterval time.Duration
	// Concurrency bounds the commands of one batch dispatched at the same time
	// (default 16).
	Concurrency int
	// ShutdownTimeout bounds how long Run, once its context ends, waits for the in-flight
	// batch before it returns and leaves the batch's rows to the reaper (default 5s).
	ShutdownTimeout time.Duration
	// Logger receives warnings (default slog.Default()).
	Logger *slog.Logger

	// Now and Rand are injectable for tests: the clock that schedules retries and the
	// jitter source in [0, 1). Defaults time.Now and math/rand/v2.
	Now  func() time.Time
	Rand func() float64
}

// Limits checked by Validate.
const (
	maxBatchSize   = 10000
	maxConcurrency = 10000
)

func (c *Config) setDefaults() {
	if c.RelayID == "" {
		c.RelayID = defaultRelayID()
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.Lease == 0 {
		c.Lease = 30 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.BaseBackoff == 0 {
		c.BaseBackoff = 5 * time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Minute
	}
	switch {
	case c.Jitter == 0:
		c.Jitter = 0.1
	case c.Jitter < 0:
		c.Jitter = 0
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.EventMaxBackoff == 0 {
		c.EventMaxBackoff = 30 * time.Second
	}
	if c.ReapInterval == 0 {
		c.ReapInterval = 10 * time.Second
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first invalid field (after defaults are applied).
func (c *Config) Validate() error {
	switch {
	case c.BatchSize < 1 || c.BatchSize > maxBatchSize:
		return fmt.Errorf("outbox: Config.BatchSize %d out of range [1, %d]", c.BatchSize, maxBatchSize)
	case c.Lease < 10*time.Millisecond:
		return fmt.Errorf("outbox: Config.Lease %s below 10ms", c.Lease)
	case c.PollInterval < time.Millisecond:
		return fmt.Errorf("outbox: Config.PollInterval %s below 1ms", c.PollInterval)
	case c.BaseBackoff < 0:
		return fmt.Errorf("outbox: Config.BaseBackoff %s is negative", c.BaseBackoff)
	case c.MaxBackoff < c.BaseBackoff:
		return fmt.Errorf("outbox: Config.MaxBackoff %s is below BaseBackoff %s", c.MaxBackoff, c.BaseBackoff)
	case c.Jitter > 1:
		return fmt.Errorf("outbox: Config.Jitter %g above 1", c.Jitter)
	case c.EventMaxBackoff < 0:
		return fmt.Errorf("outbox: Config.EventMaxBackoff %s is negative", c.EventMaxBackoff)
	case c.MaxAttempts < 1:
		return fmt.Errorf("outbox: Config.MaxAttempts %d below 1", c.MaxAttempts)
	case c.ReapInterval < time.Millisecond:
		return fmt.Errorf("outbox: Config.ReapInterval %s below 1ms", c.ReapInterval)
	case c.Concurrency < 1 || c.Concurrency > maxConcurrency:
		return fmt.Errorf("outbox: Config.Concurrency %d out of range [1, %d]", c.Concurrency, maxConcurrency)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("outbox: Config.ShutdownTimeout %s is negative", c.ShutdownTimeout)
	}
	return nil
}

func defaultRelayID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "relay"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
