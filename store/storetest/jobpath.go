package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// RunJobPath runs the conformance tests of the job path ports (LogStore,
// CredentialStore, SchedulingStore) against the driver newStore builds (same contract as
// Run's factory).
func RunJobPath(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("LogsAppendIdempotent", func(t *testing.T) { logsAppend(t, newStore(t)) })
	t.Run("LogsJoinTx", func(t *testing.T) { logsTx(t, newStore(t)) })
	t.Run("CredentialsOTP", func(t *testing.T) { credentialsOTP(t, newStore(t)) })
	t.Run("CredentialsRedeemOnce", func(t *testing.T) { credentialsRedeemOnce(t, newStore(t)) })
	t.Run("CredentialsRotate", func(t *testing.T) { credentialsRotate(t, newStore(t)) })
	t.Run("WorkerOwner", func(t *testing.T) { workerOwner(t, newStore(t)) })
	t.Run("SchedulingOrder", func(t *testing.T) { schedulingOrder(t, newStore(t)) })
	t.Run("SchedulingLockAndSkipLocked", func(t *testing.T) { schedulingLock(t, newStore(t)) })
	t.Run("NamespaceLimits", func(t *testing.T) { namespaceLimits(t, newStore(t)) })
}

func hashOf(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func logsAppend(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	t1 := time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC)
	batch := []*store.LogLine{
		{JobID: "j1", Seq: 1, Stream: store.StreamStdout, Line: "hello", Time: t1},
		{JobID: "j1", Seq: 2, Stream: store.StreamStderr, Line: "oops", Time: t1.Add(time.Millisecond)},
		{JobID: "j2", Seq: 1, Stream: store.StreamStdout, Line: "other"},
	}
	n, err := s.Logs().Append(ctx, batch...)
	must(t, err)
	if n != 3 {
		t.Fatalf("first append inserted %d lines, want 3", n)
	}
	// The same batch again (a worker re-sending after a reconnect), plus one new line.
	n, err = s.Logs().Append(ctx, append(batch, &store.LogLine{JobID: "j1", Seq: 3, Line: "more"})...)
	must(t, err)
	if n != 1 {
		t.Fatalf("re-sent append inserted %d lines, want 1 (only seq 3)", n)
	}
	// A duplicate seq with different text keeps the first.
	n, err = s.Logs().Append(ctx, &store.LogLine{JobID: "j1", Seq: 1, Line: "changed"})
	must(t, err)
	if n != 0 {
		t.Fatalf("duplicate seq inserted %d lines", n)
	}
	got, err := s.Logs().List(ctx, "j1", 0, 0)
	must(t, err)
	if len(got) != 3 || got[0].Line != "hello" || got[0].Stream != store.StreamStdout ||
		!got[0].Time.Equal(t1) || got[1].Line != "oops" || got[1].Stream != store.StreamStderr ||
		got[2].Seq != 3 || got[2].Time.IsZero() {
		t.Fatalf("List = %+v %+v %+v", got[0], got[1], got[len(got)-1])
	}
	got, err = s.Logs().List(ctx, "j1", 1, 1)
	must(t, err)
	if len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("List after 1 limit 1 = %+v", got)
	}
	got, err = s.Logs().List(ctx, "unknown", 0, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("unknown job has lines: %+v", got)
	}
	if _, err := s.Logs().Append(ctx, &store.LogLine{JobID: "j1", Seq: 0, Line: "x"}); err == nil {
		t.Fatal("seq 0 accepted")
	}
	if _, err := s.Logs().List(ctx, "j1", 0, -1); err == nil {
		t.Fatal("negative limit accepted")
	}
}

func logsTx(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	err := s.InTx(ctx, func(ctx context.Context) error {
		if _, err := s.Logs().Append(ctx, &store.LogLine{JobID: "j", Seq: 1, Line: "rolled back"}); err != nil {
			return err
		}
		return errBoom
	})
	wantErr(t, err, errBoom)
	got, err := s.Logs().List(ctx, "j", 0, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("rolled-back lines visible: %+v", got)
	}
}

func credentialsOTP(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	c := s.Credentials()
	now := time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC)
	must(t, c.SetOTP(ctx, "w1", hashOf("secret"), now.Add(5*time.Minute)))

	wantErr(t, c.RedeemOTP(ctx, "w1", hashOf("wrong"), hashOf("s1"), now), store.ErrNotFound)
	wantErr(t, c.RedeemOTP(ctx, "nobody", hashOf("secret"), hashOf("s1"), now), store.ErrNotFound)
	wantErr(t, c.RedeemOTP(ctx, "w1", hashOf("secret"), hashOf("s1"), now.Add(5*time.Minute)), store.ErrOTPExpired)
	_, err := c.WorkerForSession(ctx, hashOf("s1"))
	wantErr(t, err, store.ErrNotFound)

	must(t, c.RedeemOTP(ctx, "w1", hashOf("secret"), hashOf("s1"), now.Add(time.Minute)))
	id, err := c.WorkerForSession(ctx, hashOf("s1"))
	must(t, err)
	if id != "w1" {
		t.Fatalf("session belongs to %q, want w1", id)
	}
	// Used is reported before expiry, and the session is not replaced.
	wantErr(t, c.RedeemOTP(ctx, "w1", hashOf("secret"), hashOf("s2"), now.Add(time.Minute)), store.ErrOTPUsed)
	wantErr(t, c.RedeemOTP(ctx, "w1", hashOf("secret"), hashOf("s2"), now.Add(time.Hour)), store.ErrOTPUsed)
	if id, err := c.WorkerForSession(ctx, hashOf("s1")); err != nil || id != "w1" {
		t.Fatalf("session after a refused redeem: %q, %v", id, err)
	}

	// A worker recorded without a password cannot redeem anything.
	must(t, c.SetOTP(ctx, "w2", nil, time.Time{}))
	wantErr(t, c.RedeemOTP(ctx, "w2", hashOf(""), hashOf("s3"), now), store.ErrNotFound)
	// Replacing the password clears the used mark and the session.
	must(t, c.SetOTP(ctx, "w1", hashOf("again"), now.Add(5*time.Minute)))
	_, err = c.WorkerForSession(ctx, hashOf("s1"))
	wantErr(t, err, store.ErrNotFound)
	must(t, c.RedeemOTP(ctx, "w1", hashOf("again"), hashOf("s4"), now))

	must(t, c.Revoke(ctx, "w1"))
	must(t, c.Revoke(ctx, "w1"))
	_, err = c.WorkerForSession(ctx, hashOf("s4"))
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, c.RedeemOTP(ctx, "w1", hashOf("again"), hashOf("s5"), now), store.ErrNotFound)
}

// credentialsRedeemOnce: many concurrent redeems of one password, exactly one wins.
func credentialsRedeemOnce(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	now := time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC)
	must(t, s.Credentials().SetOTP(ctx, "w", hashOf("p"), now.Add(time.Minute)))
	var (
		wg         sync.WaitGroup
		ok, reused atomic.Int32
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Credentials().RedeemOTP(ctx, "w", hashOf("p"), hashOf(fmt.Sprint("s", i)), now)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrOTPUsed):
				reused.Add(1)
			default:
				t.Errorf("redeem %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || reused.Load() != 7 {
		t.Fatalf("%d redeems succeeded and %d were refused as used; want 1 and 7", ok.Load(), reused.Load())
	}
}

func schedulingOrder(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	base := time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC)
	mk := func(id string, prio int, age time.Duration, state domain.JobState) {
		must(t, s.Jobs().Create(ctx, &domain.Job{ID: id, State: state, CreatedAt: base.Add(-age),
			Spec: domain.JobSpec{Command: []string{"true"}, Priority: prio}}))
	}
	mk("low-old", 0, 3*time.Hour, domain.JobPending)
	mk("high-new", 5, time.Minute, domain.JobPending)
	mk("high-old", 5, time.Hour, domain.JobPending)
	mk("low-new", 0, time.Second, domain.JobPending)
	mk("running", 9, 4*time.Hour, domain.JobRunning)
	mk("neg", -3, 5*time.Hour, domain.JobPending)

	// Without a transaction Lock and ClaimPending refuse to run.
	if err := s.Scheduling().Lock(ctx); err == nil {
		t.Fatal("Lock without a transaction succeeded")
	}
	if _, err := s.Scheduling().ClaimPending(ctx, 1); err == nil {
		t.Fatal("ClaimPending without a transaction succeeded")
	}
	var got []string
	must(t, s.InTx(ctx, func(ctx context.Context) error {
		if err := s.Scheduling().Lock(ctx); err != nil {
			return err
		}
		jobs, err := s.Scheduling().ClaimPending(ctx, 10)
		for _, j := range jobs {
			got = append(got, j.ID)
		}
		return err
	}))
	want := []string{"high-old", "high-new", "low-old", "low-new", "neg"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("claim order %v, want %v", got, want)
	}

	for i, st := range []domain.WorkerState{domain.WorkerCreating, domain.WorkerReady, domain.WorkerBusy,
		domain.WorkerTerminating, domain.WorkerTerminated, domain.WorkerTerminated} {
		must(t, s.Workers().Create(ctx, &domain.Worker{ID: fmt.Sprint("w", i), Provider: "p", State: st}))
	}
	n, err := s.Scheduling().CountActiveWorkers(ctx)
	must(t, err)
	if n != 4 {
		t.Fatalf("CountActiveWorkers = %d, want 4 (all but TERMINATED)", n)
	}
}

// schedulingLock: the lock serialises two schedulers, and a second claimer skips rows
// the first holds.
func schedulingLock(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i := range 4 {
		must(t, s.Jobs().Create(ctx, &domain.Job{ID: fmt.Sprint("j", i),
			Spec: domain.JobSpec{Command: []string{"true"}}}))
	}
	locked := make(chan struct{})
	release := make(chan struct{})
	firstDone := make(chan []*domain.Job, 1)
	go func() {
		var claimed []*domain.Job
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := s.Scheduling().Lock(ctx); err != nil {
				return err
			}
			var err error
			claimed, err = s.Scheduling().ClaimPending(ctx, 2)
			close(locked)
			<-release
			return err
		})
		if err != nil {
			t.Error(err)
		}
		firstDone <- claimed
	}()
	<-locked

	// A claim without the lock (same transaction shape) skips the two held rows.
	must(t, s.InTx(ctx, func(ctx context.Context) error {
		jobs, err := s.Scheduling().ClaimPending(ctx, 4)
		if err != nil {
			return err
		}
		if len(jobs) != 2 || jobs[0].ID != "j2" || jobs[1].ID != "j3" {
			t.Errorf("second claim got %d jobs (%v), want j2 and j3", len(jobs), jobs)
		}
		return nil
	}))

	// A second Lock waits until the first transaction ends.
	gotLock := make(chan time.Time, 1)
	go func() {
		_ = s.InTx(ctx, func(ctx context.Context) error {
			if err := s.Scheduling().Lock(ctx); err != nil {
				t.Error(err)
			}
			gotLock <- time.Now()
			return nil
		})
	}()
	select {
	case <-gotLock:
		t.Fatal("second Lock did not wait for the first transaction")
	case <-time.After(150 * time.Millisecond):
	}
	releasedAt := time.Now()
	close(release)
	claimed := <-firstDone
	if len(claimed) != 2 || claimed[0].ID != "j0" || claimed[1].ID != "j1" {
		t.Fatalf("first claim = %v, want j0 and j1", claimed)
	}
	if at := <-gotLock; at.Before(releasedAt) {
		t.Fatal("second Lock returned before the first was released")
	}
}

// credentialsRotate: an unused password is replaced; a redeemed one is kept (the
// worker registered) and the rotation reports ErrOTPUsed.
func credentialsRotate(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	c := s.Credentials()
	now := time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC)
	wantErr(t, c.RotateOTP(ctx, "w1", hashOf("a"), now.Add(time.Minute)), store.ErrNotFound)
	must(t, c.SetOTP(ctx, "w1", nil, time.Time{}))
	must(t, c.RotateOTP(ctx, "w1", hashOf("a"), now.Add(time.Minute)))
	must(t, c.RotateOTP(ctx, "w1", hashOf("b"), now.Add(time.Minute)))
	wantErr(t, c.RedeemOTP(ctx, "w1", hashOf("a"), hashOf("s1"), now), store.ErrNotFound)
	must(t, c.RedeemOTP(ctx, "w1", hashOf("b"), hashOf("s1"), now))
	wantErr(t, c.RotateOTP(ctx, "w1", hashOf("c"), now.Add(time.Minute)), store.ErrOTPUsed)
	if id, err := c.WorkerForSession(ctx, hashOf("s1")); err != nil || id != "w1" {
		t.Fatalf("session after a refused rotation: %q, %v", id, err)
	}
}

// workerOwner: the owner is stored, read back and listed.
func workerOwner(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	w := &domain.Worker{ID: "w-own", Provider: "local", State: domain.WorkerCreating, Owner: "node-a"}
	must(t, s.Workers().Create(ctx, w))
	got, err := s.Workers().Get(ctx, "w-own")
	must(t, err)
	if got.Owner != "node-a" {
		t.Fatalf("owner %q, want node-a", got.Owner)
	}
	must(t, s.Workers().SetOwner(ctx, "w-own", "node-b"))
	if _, err := s.Workers().UpdateState(ctx, "w-own", domain.WorkerReady, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	ws, err := s.Workers().List(ctx, domain.WorkerReady)
	must(t, err)
	if len(ws) != 1 || ws[0].Owner != "node-b" {
		t.Fatalf("listed %+v, want w-own owned by node-b", ws)
	}
	wantErr(t, s.Workers().SetOwner(ctx, "nobody", "node-a"), store.ErrNotFound)
}
