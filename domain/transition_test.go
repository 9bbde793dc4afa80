package domain_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

var (
	t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 = t0.Add(time.Minute)
	t2 = t0.Add(2 * time.Minute)
)

// Every cell of the job matrix through (*Job).Transition: an allowed move changes the
// state and stamps the times by the rules; a refused one leaves the job untouched and
// does not call change.
func TestJobTransitionEveryCell(t *testing.T) {
	for _, from := range jobColumns {
		want := parseRow(t, jobMatrix[from], len(jobColumns))
		for i, to := range jobColumns {
			before := domain.Job{ID: "j", State: from, Notes: "before", CreatedAt: t0, UpdatedAt: t0}
			j := before
			called := false
			err := j.Transition(to, t1, func(j *domain.Job) {
				called = true
				if j.State != from {
					t.Errorf("%s → %s: change saw state %s, want the old state", from, to, j.State)
				}
				j.Notes = "after"
				j.State = domain.JobFailed // may not change the state
				j.ID = "other"             // nor the ID
			})
			if !want[i] {
				checkTransitionError(t, err, "job", string(from), string(to))
				if called || !reflect.DeepEqual(j, before) {
					t.Errorf("%s → %s refused but changed the job (change called: %v): %+v", from, to, called, j)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s → %s: %v", from, to, err)
			}
			if j.ID != "j" || j.State != to || j.Notes != "after" || !j.UpdatedAt.Equal(t1) || !j.CreatedAt.Equal(t0) {
				t.Errorf("%s → %s: got %+v", from, to, j)
			}
			if wantStarted := to == domain.JobRunning; !j.StartedAt.IsZero() != wantStarted ||
				(wantStarted && !j.StartedAt.Equal(t1)) {
				t.Errorf("%s → %s: StartedAt %v", from, to, j.StartedAt)
			}
			if wantFinished := to.IsTerminal(); !j.FinishedAt.IsZero() != wantFinished ||
				(wantFinished && !j.FinishedAt.Equal(t1)) {
				t.Errorf("%s → %s: FinishedAt %v", from, to, j.FinishedAt)
			}
		}
	}
}

func TestJobTransitionTimes(t *testing.T) {
	j := domain.Job{ID: "j", State: domain.JobPending, CreatedAt: t0, UpdatedAt: t0}
	step := func(to domain.JobState, at time.Time, change func(*domain.Job)) {
		t.Helper()
		if err := j.Transition(to, at, change); err != nil {
			t.Fatal(err)
		}
		if !j.UpdatedAt.Equal(at) {
			t.Fatalf("→ %s at %v: UpdatedAt %v", to, at, j.UpdatedAt)
		}
	}
	step(domain.JobProvisioning, t1, nil)
	step(domain.JobAssigned, t1, nil)
	if !j.StartedAt.IsZero() || !j.FinishedAt.IsZero() {
		t.Fatalf("started/finished before RUNNING: %v %v", j.StartedAt, j.FinishedAt)
	}
	// A start time set by change (the worker's own report) wins over at.
	reported := t1.Add(-time.Second)
	step(domain.JobRunning, t1, func(j *domain.Job) { j.StartedAt = reported })
	if !j.StartedAt.Equal(reported) {
		t.Fatalf("StartedAt %v, want the reported %v", j.StartedAt, reported)
	}
	// Transferred to a replacement and started again: the first start time stays.
	step(domain.JobAssigned, t2, nil)
	step(domain.JobRunning, t2, nil)
	if !j.StartedAt.Equal(reported) {
		t.Fatalf("StartedAt %v after a second start, want the first %v", j.StartedAt, reported)
	}
	step(domain.JobSucceeded, t2, nil)
	if !j.FinishedAt.Equal(t2) {
		t.Fatalf("FinishedAt %v, want %v", j.FinishedAt, t2)
	}

	// Without a change, RUNNING stamps at.
	k := domain.Job{ID: "k", State: domain.JobAssigned}
	if err := k.Transition(domain.JobRunning, t1, nil); err != nil || !k.StartedAt.Equal(t1) {
		t.Fatalf("StartedAt %v, err %v; want %v", k.StartedAt, err, t1)
	}
	// A finish time already set is kept.
	m := domain.Job{ID: "m", State: domain.JobRunning, FinishedAt: t0}
	if err := m.Transition(domain.JobFailed, t1, nil); err != nil || !m.FinishedAt.Equal(t0) {
		t.Fatalf("FinishedAt %v, err %v; want %v", m.FinishedAt, err, t0)
	}
}

func TestTransitionNeedsATime(t *testing.T) {
	j := domain.Job{ID: "j", State: domain.JobPending}
	before := j
	err := j.Transition(domain.JobProvisioning, time.Time{}, func(*domain.Job) { t.Error("change called") })
	if err == nil || errors.Is(err, domain.ErrIllegalTransition) || !reflect.DeepEqual(j, before) {
		t.Fatalf("zero time: err %v, job %+v", err, j)
	}
	w := domain.Worker{ID: "w", State: domain.WorkerCreating}
	wbefore := w
	err = w.Transition(domain.WorkerReady, time.Time{}, func(*domain.Worker) { t.Error("change called") })
	if err == nil || errors.Is(err, domain.ErrIllegalTransition) || !reflect.DeepEqual(w, wbefore) {
		t.Fatalf("zero time: err %v, worker %+v", err, w)
	}
}

func TestWorkerTransitionEveryCell(t *testing.T) {
	for _, from := range workerColumns {
		want := parseRow(t, workerMatrix[from], len(workerColumns))
		for i, to := range workerColumns {
			before := domain.Worker{ID: "w", State: from, CreatedAt: t0, UpdatedAt: t0, LastHeartbeat: t0}
			w := before
			called := false
			err := w.Transition(to, t1, func(w *domain.Worker) {
				called = true
				if w.State != from {
					t.Errorf("%s → %s: change saw state %s, want the old state", from, to, w.State)
				}
				w.JobID = "job"
				w.State = domain.WorkerBusy
				w.ID = "other"
			})
			if !want[i] {
				checkTransitionError(t, err, "worker", string(from), string(to))
				if called || !reflect.DeepEqual(w, before) {
					t.Errorf("%s → %s refused but changed the worker (change called: %v): %+v", from, to, called, w)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s → %s: %v", from, to, err)
			}
			if w.ID != "w" || w.State != to || w.JobID != "job" || !w.UpdatedAt.Equal(t1) ||
				!w.CreatedAt.Equal(t0) || !w.LastHeartbeat.Equal(t0) {
				t.Errorf("%s → %s: got %+v", from, to, w)
			}
		}
	}
}
