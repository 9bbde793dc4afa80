package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// Explanation says in words why a job is where it is (hodei job explain).
type Explanation struct {
	State string
	// Summary is one line: "PENDING: 37 jobs ahead of it; provider docker at capacity 8/8".
	Summary string
	// Details are further facts, one a line.
	Details []string
}

// explainPageSize is the page size of the PENDING scan of Explain.
const explainPageSize = 500

// Explain reads j's state and what it waits for: the jobs ahead of it and its
// providers' capacity (PENDING), its worker's registration (PROVISIONING), its
// worker's heartbeat (RUNNING), its result or last error (ended).
func (s *Service) Explain(ctx context.Context, j *domain.Job) (*Explanation, error) {
	now := s.cfg.Now()
	e := &Explanation{State: string(j.State)}
	age := func(t time.Time) string { return now.Sub(t).Round(100 * time.Millisecond).String() }
	worker := func() (*domain.Worker, error) {
		if j.WorkerID == "" {
			return nil, nil
		}
		w, err := s.st.Workers().Get(ctx, j.WorkerID)
		if err != nil {
			return nil, fmt.Errorf("jobs: explain: worker %s: %w", j.WorkerID, err)
		}
		return w, nil
	}
	switch j.State {
	case domain.JobPending:
		ahead, err := s.jobsAhead(ctx, j)
		if err != nil {
			return nil, err
		}
		e.Summary = fmt.Sprintf("PENDING: %d jobs ahead of it", ahead)
		room, _, err := s.providerRoom(ctx)
		if err != nil {
			return nil, err
		}
		cands, err := s.candidates(j.Spec)
		if err != nil {
			e.Summary += "; no configured provider can run it: " + err.Error()
			break
		}
		for _, name := range cands {
			sl, ok := room[name]
			if !ok {
				continue
			}
			if sl.room <= 0 {
				e.Summary += fmt.Sprintf("; provider %s at capacity %d/%d", name, sl.limit, sl.limit)
			} else {
				e.Details = append(e.Details, fmt.Sprintf("provider %s has room for %d more workers (%d/%d used)", name, sl.room, sl.limit-sl.room, sl.limit))
			}
		}
		e.Details = append(e.Details, fmt.Sprintf("waiting %s since submission (priority %d)", age(j.CreatedAt), j.Spec.Priority))
	case domain.JobProvisioning:
		w, err := worker()
		if err != nil {
			return nil, err
		}
		e.Summary = fmt.Sprintf("PROVISIONING: waiting %s for the worker to register (timeout %s)", age(j.UpdatedAt), s.cfg.RegistrationTimeout)
		if w != nil {
			e.Details = append(e.Details, fmt.Sprintf("worker %s (%s) is %s", w.ID, w.Provider, w.State))
		}
	case domain.JobAssigned:
		w, err := worker()
		if err != nil {
			return nil, err
		}
		e.Summary = fmt.Sprintf("ASSIGNED: waiting %s for its worker to start it", age(j.UpdatedAt))
		if w != nil {
			e.Summary = fmt.Sprintf("ASSIGNED to worker %s (%s): waiting %s for it to start the job", w.ID, w.Provider, age(j.UpdatedAt))
		}
	case domain.JobRunning:
		w, err := worker()
		if err != nil {
			return nil, err
		}
		e.Summary = fmt.Sprintf("RUNNING for %s", age(j.StartedAt))
		if w != nil {
			hb := "no heartbeat yet"
			if !w.LastHeartbeat.IsZero() {
				hb = "last heartbeat " + age(w.LastHeartbeat) + " ago"
			}
			e.Summary = fmt.Sprintf("RUNNING on worker %s (%s), %s", w.ID, w.Provider, hb)
			e.Details = append(e.Details, fmt.Sprintf("running for %s", age(j.StartedAt)))
		}
		if j.Spec.Timeout > 0 {
			e.Details = append(e.Details, fmt.Sprintf("times out after %s (%s left)", j.Spec.Timeout,
				max(0, j.Spec.Timeout-now.Sub(j.StartedAt)).Round(100*time.Millisecond)))
		}
	case domain.JobCancelling:
		e.Summary = fmt.Sprintf("CANCELLING for %s: waiting for worker %s to stop the job", age(j.UpdatedAt), j.WorkerID)
	case domain.JobManualInterventionRequired:
		e.Summary = "MANUAL_INTERVENTION_REQUIRED: " + j.LastError
		e.Details = append(e.Details, "a human decides: hodei admin job resume "+j.ID+" --resolution retry|manually_fixed|cancelled")
	default: // ended
		e.Summary = fmt.Sprintf("%s %s ago", j.State, age(j.FinishedAt))
		if j.ExitCode != nil {
			e.Summary += fmt.Sprintf(" with exit code %d", *j.ExitCode)
		}
		if j.LastError != "" {
			e.Summary += ": " + j.LastError
		}
	}
	if j.Attempt > 1 {
		e.Details = append(e.Details, fmt.Sprintf("attempt %d of %d", j.Attempt, max(j.Spec.MaxAttempts, 1)))
	}
	return e, nil
}

// jobsAhead counts the PENDING jobs the scheduler takes before j: higher priority, or
// the same priority and older.
func (s *Service) jobsAhead(ctx context.Context, j *domain.Job) (int, error) {
	n := 0
	f := store.JobFilter{States: []domain.JobState{domain.JobPending}, PageSize: explainPageSize}
	for {
		page, next, err := s.st.Jobs().List(ctx, f)
		if err != nil {
			return 0, fmt.Errorf("jobs: explain: pending jobs: %w", err)
		}
		for _, o := range page {
			if o.ID == j.ID {
				continue
			}
			if o.Spec.Priority > j.Spec.Priority || (o.Spec.Priority == j.Spec.Priority &&
				(o.CreatedAt.Before(j.CreatedAt) || (o.CreatedAt.Equal(j.CreatedAt) && o.ID < j.ID))) {
				n++
			}
		}
		if next == "" {
			return n, nil
		}
		f.PageToken = next
	}
}
