package domain

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrIllegalTransition matches (with errors.Is) every *TransitionError.
var ErrIllegalTransition = errors.New("illegal state transition")

// ErrUnknownState is returned by ParseJobState and ParseWorkerState for a name that is
// not a state.
var ErrUnknownState = errors.New("unknown state")

// TransitionError reports a state change the transition table does not allow. Nothing
// may be written when a caller gets one.
type TransitionError struct {
	Entity string // "job" or "worker"
	From   string
	To     string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("%s: illegal transition %s → %s", e.Entity, e.From, e.To)
}

// Is makes errors.Is(err, ErrIllegalTransition) true for every *TransitionError.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }

// jobNext is the job transition table (see the diagram in doc.go). It is a function
// rather than a package-level map so that nobody can change the table at run time.
func jobNext(from JobState) []JobState {
	switch from {
	case JobPending:
		return []JobState{JobProvisioning, JobCancelling, JobCancelled, JobFailed}
	case JobProvisioning:
		return []JobState{JobAssigned, JobPending, JobFailed, JobTimedOut, JobCancelling, JobManualInterventionRequired}
	case JobAssigned:
		return []JobState{JobRunning, JobPending, JobFailed, JobCancelling, JobTimedOut, JobManualInterventionRequired}
	case JobRunning:
		return []JobState{JobSucceeded, JobFailed, JobTimedOut, JobCancelling, JobPending, JobAssigned, JobManualInterventionRequired}
	case JobCancelling:
		return []JobState{JobCancelled, JobSucceeded, JobFailed, JobManualInterventionRequired}
	case JobManualInterventionRequired:
		return []JobState{JobPending, JobFailed, JobCancelled}
	default: // terminal or unknown
		return nil
	}
}

// workerNext is the worker transition table (see doc.go).
func workerNext(from WorkerState) []WorkerState {
	switch from {
	case WorkerCreating:
		return []WorkerState{WorkerReady, WorkerTerminating, WorkerTerminated}
	case WorkerReady:
		return []WorkerState{WorkerBusy, WorkerTerminating, WorkerTerminated}
	case WorkerBusy:
		return []WorkerState{WorkerReady, WorkerTerminating, WorkerTerminated}
	case WorkerTerminating:
		return []WorkerState{WorkerTerminated}
	default: // terminal or unknown
		return nil
	}
}

// CheckJobTransition returns nil if a job may move from `from` to `to`, and a
// *TransitionError otherwise. Staying in the same state is not a transition and is an
// error: callers that want idempotent writes check for it themselves.
func CheckJobTransition(from, to JobState) error {
	if !slices.Contains(jobNext(from), to) {
		return &TransitionError{Entity: "job", From: string(from), To: string(to)}
	}
	return nil
}

// CheckWorkerTransition is CheckJobTransition for workers.
func CheckWorkerTransition(from, to WorkerState) error {
	if !slices.Contains(workerNext(from), to) {
		return &TransitionError{Entity: "worker", From: string(from), To: string(to)}
	}
	return nil
}

// CanTransitionTo reports whether CheckJobTransition(s, to) would succeed.
func (s JobState) CanTransitionTo(to JobState) bool { return CheckJobTransition(s, to) == nil }

// Next returns the states a job in state s may move to (a fresh slice; nil when terminal).
func (s JobState) Next() []JobState { return jobNext(s) }

// AllJobStates returns every job state in life-cycle order (a fresh slice).
func AllJobStates() []JobState {
	return []JobState{
		JobPending, JobProvisioning, JobAssigned, JobRunning, JobSucceeded,
		JobFailed, JobTimedOut, JobCancelling, JobCancelled, JobManualInterventionRequired,
	}
}

// Valid reports whether s is one of the job states.
func (s JobState) Valid() bool { return slices.Contains(AllJobStates(), s) }

// IsTerminal reports whether s is an end state with no way out: SUCCEEDED, FAILED,
// TIMED_OUT or CANCELLED. MANUAL_INTERVENTION_REQUIRED is not terminal: an operator
// moves the job on.
func (s JobState) IsTerminal() bool {
	switch s {
	case JobSucceeded, JobFailed, JobTimedOut, JobCancelled:
		return true
	}
	return false
}

// RequiresManualReview reports whether the job waits for a human
// (MANUAL_INTERVENTION_REQUIRED).
func (s JobState) RequiresManualReview() bool { return s == JobManualInterventionRequired }

// String returns the state's contract name.
func (s JobState) String() string { return string(s) }

// ParseJobState returns the job state named s (exact, upper-case contract name).
func ParseJobState(s string) (JobState, error) {
	st := JobState(s)
	if !st.Valid() {
		return "", fmt.Errorf("job state %q: %w", s, ErrUnknownState)
	}
	return st, nil
}

// CanTransitionTo reports whether CheckWorkerTransition(s, to) would succeed.
func (s WorkerState) CanTransitionTo(to WorkerState) bool {
	return CheckWorkerTransition(s, to) == nil
}

// Next returns the states a worker in state s may move to (a fresh slice; nil when terminal).
func (s WorkerState) Next() []WorkerState { return workerNext(s) }

// AllWorkerStates returns every worker state in life-cycle order (a fresh slice).
func AllWorkerStates() []WorkerState {
	return []WorkerState{WorkerCreating, WorkerReady, WorkerBusy, WorkerTerminating, WorkerTerminated}
}

// Valid reports whether s is one of the worker states.
func (s WorkerState) Valid() bool { return slices.Contains(AllWorkerStates(), s) }

// IsTerminal reports whether s is TERMINATED, the only worker end state.
func (s WorkerState) IsTerminal() bool { return s == WorkerTerminated }

// String returns the state's contract name.
func (s WorkerState) String() string { return string(s) }

// ParseWorkerState returns the worker state named s (exact, upper-case contract name).
func ParseWorkerState(s string) (WorkerState, error) {
	st := WorkerState(s)
	if !st.Valid() {
		return "", fmt.Errorf("worker state %q: %w", s, ErrUnknownState)
	}
	return st, nil
}

// Transition moves j to state `to` at time at, the caller's clock. It is the one way a
// stored job changes state: store.JobStore.UpdateState calls it on the locked row and
// writes back what it leaves in j, deciding nothing itself.
//
// An illegal move (the table in doc.go) returns a *TransitionError, and a zero at an
// error; then j is left unchanged and change is not called. Otherwise, in this order:
//
//   - change (optional), the caller's edit of other fields, runs on the job as it was
//     (j.State is still the old state). It may not change ID or State: both are
//     restored after it.
//   - State becomes `to` and UpdatedAt becomes at.
//   - StartedAt becomes at on entering RUNNING, and FinishedAt on entering a terminal
//     state, each unless already set (earlier, or by change: a start time the worker
//     reported wins over the time the report was recorded).
func (j *Job) Transition(to JobState, at time.Time, change func(*Job)) error {
	if err := CheckJobTransition(j.State, to); err != nil {
		return err
	}
	if at.IsZero() {
		return fmt.Errorf("job %s: transition %s → %s at the zero time", j.ID, j.State, to)
	}
	id := j.ID
	if change != nil {
		change(j)
	}
	j.ID, j.State, j.UpdatedAt = id, to, at
	if to == JobRunning && j.StartedAt.IsZero() {
		j.StartedAt = at
	}
	if to.IsTerminal() && j.FinishedAt.IsZero() {
		j.FinishedAt = at
	}
	return nil
}

// Transition is (*Job).Transition for workers: check the table (doc.go), run change on
// the worker as it was (ID and State restored after it), then set State to `to` and
// UpdatedAt to at. store.WorkerStore.UpdateState calls it on the locked row.
func (w *Worker) Transition(to WorkerState, at time.Time, change func(*Worker)) error {
	if err := CheckWorkerTransition(w.State, to); err != nil {
		return err
	}
	if at.IsZero() {
		return fmt.Errorf("worker %s: transition %s → %s at the zero time", w.ID, w.State, to)
	}
	id := w.ID
	if change != nil {
		change(w)
	}
	w.ID, w.State, w.UpdatedAt = id, to, at
	return nil
}
