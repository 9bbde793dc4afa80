package command_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// submit is the command of the idempotency tests. Its effect is a job row written
// through ctx's transaction; the row's label "key" ties it to the command.
type submit struct {
	Key   string `json:"key"`
	JobID string `json:"job_id,omitempty"` // fixed id, or empty for a fresh one per run
	Fail  bool   `json:"fail,omitempty"`   // fail after writing the job
}

func (submit) CommandType() string      { return "test.submit" }
func (c submit) IdempotencyKey() string { return c.Key }

type submitResult struct {
	JobID string `json:"job_id"`
	Run   int64  `json:"run"` // which handler run produced it
}

type idemFixture struct {
	st   *postgres.Store
	bus  *command.Bus
	d    command.Dispatcher
	runs atomic.Int64
	gate func() error // optional: called first in the handler
}

func newIdemFixture(t *testing.T) *idemFixture {
	t.Helper()
	f := &idemFixture{st: pgtest.NewStore(t), bus: command.NewBus()}
	command.Register(f.bus, command.HandlerFunc[submit, submitResult](f.handle))
	f.d = command.Chain(f.bus, command.Idempotency(command.IdempotencyDeps{Tx: f.st, Keys: f.st.Idempotency()}, f.bus))
	return f
}

func (f *idemFixture) handle(ctx context.Context, c submit) (submitResult, error) {
	run := f.runs.Add(1)
	if f.gate != nil {
		if err := f.gate(); err != nil {
			return submitResult{}, err
		}
	}
	j := &domain.Job{ID: c.JobID, Spec: domain.JobSpec{Command: []string{"true"}, Labels: map[string]string{"key": c.Key}}}
	if err := f.st.Jobs().Create(ctx, j); err != nil {
		return submitResult{}, err
	}
	if c.Fail {
		return submitResult{}, command.Transient(errors.New("worker pool unavailable"))
	}
	return submitResult{JobID: j.ID, Run: run}, nil
}

// effects counts the committed job rows of key.
func (f *idemFixture) effects(t *testing.T, key string) int {
	t.Helper()
	var n int
	err := f.st.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM jobs WHERE labels @> jsonb_build_object('key', $1::text)`, key).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// keyRecorded reports whether key is in the idempotency store.
func (f *idemFixture) keyRecorded(t *testing.T, key string) bool {
	t.Helper()
	_, err := f.st.Idempotency().Get(context.Background(), key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestIdempotencyEffectAndKeyCommitTogether(t *testing.T) {
	f := newIdemFixture(t)
	ctx := context.Background()
	first, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if f.effects(t, "k1") != 1 || !f.keyRecorded(t, "k1") {
		t.Fatalf("after success: %d effects, key recorded %v; want 1 and true", f.effects(t, "k1"), f.keyRecorded(t, "k1"))
	}
	// The same key again: the handler does not run, the typed result is the first one.
	again, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if again != first || f.runs.Load() != 1 || f.effects(t, "k1") != 1 {
		t.Fatalf("repeat = %+v (first %+v), runs %d, effects %d; want the first result, 1 run, 1 effect",
			again, first, f.runs.Load(), f.effects(t, "k1"))
	}
	// Another key is another command.
	if _, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "k2"}); err != nil {
		t.Fatal(err)
	}
	if f.runs.Load() != 2 {
		t.Fatalf("runs = %d, want 2", f.runs.Load())
	}
}

// TestIdempotencyFailedCommandCanRunAgain is the Rust defect: a failed command's key was
// recorded and its retry refused.
func TestIdempotencyFailedCommandCanRunAgain(t *testing.T) {
	f := newIdemFixture(t)
	ctx := context.Background()
	_, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "k", JobID: "job-1", Fail: true})
	var he *command.HandlerError
	if !errors.As(err, &he) || !command.IsTransient(err) {
		t.Fatalf("err = %v, want the handler's transient error", err)
	}
	if n := f.effects(t, "k"); n != 0 {
		t.Fatalf("failed handler left %d effects, want 0 (rolled back)", n)
	}
	if f.keyRecorded(t, "k") {
		t.Fatal("failed handler's key was recorded")
	}
	got, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "k", JobID: "job-1"})
	if err != nil {
		t.Fatalf("retry with the same key: %v", err)
	}
	if got.JobID != "job-1" || got.Run != 2 || f.effects(t, "k") != 1 || !f.keyRecorded(t, "k") {
		t.Fatalf("retry = %+v, effects %d; want job-1 from run 2 and one effect", got, f.effects(t, "k"))
	}
}

func TestIdempotencyEmptyKeyPassesThrough(t *testing.T) {
	f := newIdemFixture(t)
	for range 2 {
		if _, err := command.Dispatch[submitResult](context.Background(), f.d, submit{}); err != nil {
			t.Fatal(err)
		}
	}
	if f.runs.Load() != 2 || f.effects(t, "") != 2 {
		t.Fatalf("runs %d, effects %d; want 2 and 2", f.runs.Load(), f.effects(t, ""))
	}
	var keys int
	if err := f.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys`).Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if keys != 0 {
		t.Fatalf("%d keys recorded for keyless commands", keys)
	}
}

// TestIdempotencyConcurrentSameKey: 20 dispatches race with one key. Exactly one effect
// commits and every caller gets the winner's result. Two variants: effects that do not
// collide (the race is decided at Put), and effects on one job id (the losers' handlers
// fail on the primary key and are answered from the key store).
func TestIdempotencyConcurrentSameKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		jobID string
	}{{"fresh job ids", ""}, {"one job id", "job-shared"}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newIdemFixture(t)
			const n = 20
			// The first k handlers wait for each other before writing, so that k
			// transactions really race (k stays below the pool's 10 connections).
			const k = 8
			var arrived atomic.Int64
			all := make(chan struct{})
			f.gate = func() error {
				if arrived.Add(1) == k {
					close(all)
				}
				select {
				case <-all:
					return nil
				case <-time.After(waitTimeout):
					return errors.New("barrier: the dispatches did not run concurrently")
				}
			}
			results := make([]submitResult, n)
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					results[i], errs[i] = command.Dispatch[submitResult](context.Background(), f.d, submit{Key: "race", JobID: tc.jobID})
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("dispatch %d: %v", i, err)
				}
				if results[i] != results[0] {
					t.Fatalf("dispatch %d got %+v, dispatch 0 got %+v", i, results[i], results[0])
				}
			}
			if got := f.effects(t, "race"); got != 1 {
				t.Fatalf("%d effects committed, want exactly 1", got)
			}
			var jobID string
			if err := f.st.Pool().QueryRow(context.Background(),
				`SELECT id FROM jobs WHERE labels @> '{"key":"race"}'`).Scan(&jobID); err != nil {
				t.Fatal(err)
			}
			if jobID != results[0].JobID {
				t.Fatalf("committed job %s, callers were told %s", jobID, results[0].JobID)
			}
			if runs := f.runs.Load(); runs < k {
				t.Fatalf("handler ran %d times, want at least %d racing runs", runs, k)
			}
			t.Logf("handler ran %d times for %d dispatches; one effect committed", f.runs.Load(), n)
		})
	}
}

// TestIdempotencyJoinedTransaction: inside a caller's transaction the key and the effect
// join it; the caller's rollback drops both, its commit keeps both.
func TestIdempotencyJoinedTransaction(t *testing.T) {
	f := newIdemFixture(t)
	ctx := context.Background()
	abort := errors.New("caller aborts")
	err := f.st.InTx(ctx, func(ctx context.Context) error {
		if _, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "j"}); err != nil {
			return err
		}
		return abort
	})
	if !errors.Is(err, abort) {
		t.Fatalf("err = %v", err)
	}
	if f.effects(t, "j") != 0 || f.keyRecorded(t, "j") {
		t.Fatal("the caller's rollback left the effect or the key")
	}
	var inTx submitResult
	err = f.st.InTx(ctx, func(ctx context.Context) error {
		var err error
		inTx, err = command.Dispatch[submitResult](ctx, f.d, submit{Key: "j"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "j"})
	if err != nil || got != inTx || f.effects(t, "j") != 1 {
		t.Fatalf("after commit: %+v, %v, effects %d; want %+v and 1 effect", got, err, f.effects(t, "j"), inTx)
	}
}

// TestIdempotencyJoinedLostRace: a dispatch inside a caller's transaction that loses the
// race cannot roll back its effect itself; it must fail (transient, ErrConflict) so that
// the caller rolls back, and never report success with its effect still pending.
func TestIdempotencyJoinedLostRace(t *testing.T) {
	f := newIdemFixture(t)
	ctx := context.Background()
	inHandler := make(chan struct{})
	release := make(chan struct{})
	slow := command.NewBus()
	command.Register(slow, command.HandlerFunc[submit, submitResult](func(ctx context.Context, c submit) (submitResult, error) {
		r, err := f.handle(ctx, c)
		close(inHandler)
		<-release
		return r, err
	}))
	slowD := command.Chain(slow, command.Idempotency(command.IdempotencyDeps{Tx: f.st, Keys: f.st.Idempotency()}, slow))

	done := make(chan error, 1)
	go func() {
		done <- f.st.InTx(ctx, func(ctx context.Context) error {
			_, err := command.Dispatch[submitResult](ctx, slowD, submit{Key: "jr"})
			return err
		})
	}()
	<-inHandler // the joined dispatch has written its effect but not its key
	winner, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "jr"})
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	err = <-done
	if !errors.Is(err, store.ErrConflict) || !command.IsTransient(err) {
		t.Fatalf("joined loser: err = %v, want a transient ErrConflict", err)
	}
	if n := f.effects(t, "jr"); n != 1 {
		t.Fatalf("%d effects, want 1 (the winner's)", n)
	}
	got, err := command.Dispatch[submitResult](ctx, f.d, submit{Key: "jr"})
	if err != nil || got != winner {
		t.Fatalf("retry = %+v, %v; want the winner's %+v", got, err, winner)
	}
}

func TestIdempotencyNeedsDeps(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Tx") {
			t.Fatalf("panic = %v, want one naming Tx", r)
		}
	}()
	command.Idempotency(command.IdempotencyDeps{}, command.NewBus())
}
