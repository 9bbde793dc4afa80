package domain_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/domain"
)

// The expected tables are written out here by hand, independent of the package's own
// table: each row is a from-state, each column a to-state in the order of the column
// list, "x" allowed and "." forbidden. Every cell of the cross product is checked, plus
// unknown states on either side.

var jobColumns = []domain.JobState{
	"PENDING", "PROVISIONING", "ASSIGNED", "RUNNING", "SUCCEEDED",
	"FAILED", "TIMED_OUT", "CANCELLING", "CANCELLED", "MANUAL_INTERVENTION_REQUIRED",
}

var jobMatrix = map[domain.JobState]string{
	//                                 PEN PRO ASS RUN SUC FAI TIM CNG CND MIR
	"PENDING":                      " .   x   .   .   .   x   .   x   x   . ",
	"PROVISIONING":                 " x   .   x   .   .   x   x   x   .   x ",
	"ASSIGNED":                     " x   .   .   x   .   x   x   x   .   x ",
	"RUNNING":                      " x   .   x   .   x   x   x   x   .   x ",
	"SUCCEEDED":                    " .   .   .   .   .   .   .   .   .   . ",
	"FAILED":                       " .   .   .   .   .   .   .   .   .   . ",
	"TIMED_OUT":                    " .   .   .   .   .   .   .   .   .   . ",
	"CANCELLING":                   " .   .   .   .   x   x   .   .   x   x ",
	"CANCELLED":                    " .   .   .   .   .   .   .   .   .   . ",
	"MANUAL_INTERVENTION_REQUIRED": " x   .   .   .   .   x   .   .   x   . ",
}

var workerColumns = []domain.WorkerState{"CREATING", "READY", "BUSY", "TERMINATING", "TERMINATED"}

var workerMatrix = map[domain.WorkerState]string{
	//               CRE RDY BSY TNG TND
	"CREATING":    " .   x   .   x   x ",
	"READY":       " .   .   x   x   x ",
	"BUSY":        " .   x   .   x   x ",
	"TERMINATING": " .   .   .   .   x ",
	"TERMINATED":  " .   .   .   .   . ",
}

func parseRow(t *testing.T, row string, n int) []bool {
	t.Helper()
	cells := strings.Fields(row)
	if len(cells) != n {
		t.Fatalf("test table row %q has %d cells, want %d", row, len(cells), n)
	}
	out := make([]bool, n)
	for i, c := range cells {
		switch c {
		case "x":
			out[i] = true
		case ".":
		default:
			t.Fatalf("test table row %q: bad cell %q", row, c)
		}
	}
	return out
}

func TestJobTransitionsFullMatrix(t *testing.T) {
	if len(jobMatrix) != len(jobColumns) {
		t.Fatalf("test table has %d rows, want %d", len(jobMatrix), len(jobColumns))
	}
	allowed, forbidden := 0, 0
	for _, from := range jobColumns {
		row, ok := jobMatrix[from]
		if !ok {
			t.Fatalf("test table has no row for %s", from)
		}
		want := parseRow(t, row, len(jobColumns))
		for i, to := range jobColumns {
			err := domain.CheckJobTransition(from, to)
			if want[i] {
				allowed++
				if err != nil {
					t.Errorf("%s → %s: want allowed, got %v", from, to, err)
				}
				if !from.CanTransitionTo(to) || !slices.Contains(from.Next(), to) {
					t.Errorf("%s → %s: CanTransitionTo/Next disagree with CheckJobTransition", from, to)
				}
				continue
			}
			forbidden++
			checkTransitionError(t, err, "job", string(from), string(to))
			if from.CanTransitionTo(to) || slices.Contains(from.Next(), to) {
				t.Errorf("%s → %s: CanTransitionTo/Next allow a forbidden move", from, to)
			}
		}
	}
	if allowed+forbidden != 100 || allowed != 30 {
		t.Errorf("checked %d allowed and %d forbidden transitions, want 30 and 70", allowed, forbidden)
	}
}

func TestWorkerTransitionsFullMatrix(t *testing.T) {
	if len(workerMatrix) != len(workerColumns) {
		t.Fatalf("test table has %d rows, want %d", len(workerMatrix), len(workerColumns))
	}
	allowed := 0
	for _, from := range workerColumns {
		want := parseRow(t, workerMatrix[from], len(workerColumns))
		for i, to := range workerColumns {
			err := domain.CheckWorkerTransition(from, to)
			if want[i] {
				allowed++
				if err != nil {
					t.Errorf("%s → %s: want allowed, got %v", from, to, err)
				}
				if !from.CanTransitionTo(to) || !slices.Contains(from.Next(), to) {
					t.Errorf("%s → %s: CanTransitionTo/Next disagree", from, to)
				}
				continue
			}
			checkTransitionError(t, err, "worker", string(from), string(to))
			if from.CanTransitionTo(to) {
				t.Errorf("%s → %s: CanTransitionTo allows a forbidden move", from, to)
			}
		}
	}
	if allowed != 10 {
		t.Errorf("checked %d allowed worker transitions, want 10", allowed)
	}
}

func checkTransitionError(t *testing.T, err error, entity, from, to string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s %s → %s: want an error, got nil", entity, from, to)
		return
	}
	if !errors.Is(err, domain.ErrIllegalTransition) {
		t.Errorf("%s %s → %s: errors.Is(err, ErrIllegalTransition) is false for %v", entity, from, to, err)
	}
	var te *domain.TransitionError
	if !errors.As(err, &te) {
		t.Fatalf("%s %s → %s: error %T is not a *TransitionError", entity, from, to, err)
	}
	if te.Entity != entity || te.From != from || te.To != to {
		t.Errorf("TransitionError = %+v, want {%s %s %s}", *te, entity, from, to)
	}
	if msg := err.Error(); !strings.Contains(msg, from) || !strings.Contains(msg, to) {
		t.Errorf("message %q does not name both states", msg)
	}
}

func TestUnknownStatesAreRefused(t *testing.T) {
	for _, s := range jobColumns {
		checkTransitionError(t, domain.CheckJobTransition("BOGUS", s), "job", "BOGUS", string(s))
		checkTransitionError(t, domain.CheckJobTransition(s, "pending"), "job", string(s), "pending")
	}
	checkTransitionError(t, domain.CheckJobTransition("", ""), "job", "", "")
	for _, s := range workerColumns {
		checkTransitionError(t, domain.CheckWorkerTransition("BOGUS", s), "worker", "BOGUS", string(s))
		checkTransitionError(t, domain.CheckWorkerTransition(s, "ready"), "worker", string(s), "ready")
	}
}

func TestJobStateHelpers(t *testing.T) {
	if got := domain.AllJobStates(); !slices.Equal(got, jobColumns) {
		t.Errorf("AllJobStates() = %v, want %v", got, jobColumns)
	}
	terminal := map[domain.JobState]bool{"SUCCEEDED": true, "FAILED": true, "TIMED_OUT": true, "CANCELLED": true}
	for _, s := range jobColumns {
		if !s.Valid() {
			t.Errorf("%s.Valid() = false", s)
		}
		if s.IsTerminal() != terminal[s] {
			t.Errorf("%s.IsTerminal() = %v, want %v", s, s.IsTerminal(), terminal[s])
		}
		if terminal[s] && len(s.Next()) != 0 {
			t.Errorf("terminal %s has next states %v", s, s.Next())
		}
		if want := s == "MANUAL_INTERVENTION_REQUIRED"; s.RequiresManualReview() != want {
			t.Errorf("%s.RequiresManualReview() = %v, want %v", s, !want, want)
		}
		got, err := domain.ParseJobState(string(s))
		if err != nil || got != s {
			t.Errorf("ParseJobState(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "pending", "Pending", "DONE", " PENDING"} {
		if domain.JobState(bad).Valid() {
			t.Errorf("JobState(%q).Valid() = true", bad)
		}
		if _, err := domain.ParseJobState(bad); !errors.Is(err, domain.ErrUnknownState) || !strings.Contains(err.Error(), "job state") {
			t.Errorf("ParseJobState(%q) error = %v, want ErrUnknownState naming the job state", bad, err)
		}
	}
	// The slices are fresh: changing one does not change the table.
	all := domain.AllJobStates()
	all[0] = "X"
	next := domain.JobPending.Next()
	next[0] = "X"
	if domain.AllJobStates()[0] != domain.JobPending || domain.JobPending.Next()[0] == "X" {
		t.Error("AllJobStates/Next return shared slices")
	}
}

func TestWorkerStateHelpers(t *testing.T) {
	if got := domain.AllWorkerStates(); !slices.Equal(got, workerColumns) {
		t.Errorf("AllWorkerStates() = %v, want %v", got, workerColumns)
	}
	for _, s := range workerColumns {
		if !s.Valid() {
			t.Errorf("%s.Valid() = false", s)
		}
		if want := s == "TERMINATED"; s.IsTerminal() != want {
			t.Errorf("%s.IsTerminal() = %v, want %v", s, !want, want)
		}
		got, err := domain.ParseWorkerState(string(s))
		if err != nil || got != s {
			t.Errorf("ParseWorkerState(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "ready", "IDLE"} {
		if _, err := domain.ParseWorkerState(bad); !errors.Is(err, domain.ErrUnknownState) {
			t.Errorf("ParseWorkerState(%q) error = %v, want ErrUnknownState", bad, err)
		}
	}
}
