package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/hodei-jobs/hodei/messaging"
)

// Notifier wakes the WatchJob and StreamLogs streams of this replica when a job may
// have changed. It only accelerates: every stream also polls the store, so a lost
// notification costs at most one poll interval. Safe for concurrent use; the zero value
// is not usable, call NewNotifier.
//
// Sources of notifications:
//   - this replica's own writes (Submit, Cancel, a worker's logs, start and result
//     arriving on a stream connected here);
//   - job events of every replica: Listen subscribes (core NATS) to the JetStream
//     subjects "hodei.events.job.>" the outbox relay publishes to and notifies the job
//     named in the event (field entity_id, job_id or id of the JSON payload).
type Notifier struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

// NewNotifier returns an empty Notifier.
func NewNotifier() *Notifier {
	return &Notifier{subs: map[string]map[chan struct{}]struct{}{}}
}

// Subscribe returns a channel that receives (coalesced) after each Notify of any of
// keys, and a function that ends the subscription.
func (n *Notifier) Subscribe(keys ...string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	for _, key := range keys {
		set := n.subs[key]
		if set == nil {
			set = map[chan struct{}]struct{}{}
			n.subs[key] = set
		}
		set[ch] = struct{}{}
	}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		for _, key := range keys {
			delete(n.subs[key], ch)
			if len(n.subs[key]) == 0 {
				delete(n.subs, key)
			}
		}
		n.mu.Unlock()
	}
}

// Notify wakes every subscriber of key without blocking.
func (n *Notifier) Notify(key string) {
	n.mu.Lock()
	for ch := range n.subs[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	n.mu.Unlock()
}

// Keys of the notifications: a job's record and a job's log lines.
func jobKey(id string) string  { return "job/" + id }
func logsKey(id string) string { return "logs/" + id }

// Listen notifies the jobs named by the job events published on nc until ctx ends
// (then it returns nil). A payload without a job id is ignored.
func (n *Notifier) Listen(ctx context.Context, nc *nats.Conn, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	sub, err := nc.Subscribe(messaging.EventsSubjectPrefix+"job.>", func(m *nats.Msg) {
		var ev struct {
			EntityID string `json:"entity_id"`
			JobID    string `json:"job_id"`
			ID       string `json:"id"`
		}
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			logger.Debug("api: undecodable job event", "subject", m.Subject, "err", err)
			return
		}
		for _, id := range []string{ev.EntityID, ev.JobID, ev.ID} {
			if id != "" {
				n.Notify(jobKey(id))
				n.Notify(logsKey(id))
				return
			}
		}
	})
	if err != nil {
		return fmt.Errorf("api: subscribe to job events: %w", err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}
