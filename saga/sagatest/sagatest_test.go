package sagatest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/saga/sagatest"
	"github.com/hodei-jobs/hodei/store"
)

var _ sagatest.TB = (*testing.T)(nil)

// rowCmd writes one job row labelled with its key: a committed effect shows as a row.
type rowCmd struct {
	Key string `json:"key"`
}

func (rowCmd) CommandType() string      { return "sagatest.row" }
func (c rowCmd) IdempotencyKey() string { return c.Key }

func registerRows(f *sagatest.Fixture) {
	command.Register(f.Bus(), command.HandlerFunc[rowCmd, string](func(ctx context.Context, c rowCmd) (string, error) {
		j := &domain.Job{ID: uuid.NewString(), Spec: domain.JobSpec{Name: "effect", Command: []string{"true"},
			Labels: map[string]string{"effect": c.Key}}}
		return j.ID, f.Store().Jobs().Create(ctx, j)
	}))
}

// rows counts committed effects whose key starts with prefix.
func rows(t *testing.T, f *sagatest.Fixture, prefix string) int {
	t.Helper()
	js, _, err := f.Store().Jobs().List(t.Context(), store.JobFilter{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, j := range js {
		if strings.HasPrefix(j.Spec.Labels["effect"], prefix) {
			n++
		}
	}
	return n
}

func rowStep(name string) saga.Step {
	do := func(ctx context.Context, sc *saga.StepContext) (any, error) {
		return command.Dispatch[string](ctx, sc, rowCmd{Key: sc.Key()})
	}
	return saga.Step{Name: name, Do: do, Compensate: do,
		Retry: saga.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Second}}
}

func TestFaultAfterDoRollsTheEffectBack(t *testing.T) {
	f := sagatest.New(t)
	registerRows(f)
	f.Register(saga.Definition{Name: "rows", Version: 1, Steps: []saga.Step{rowStep("a"), rowStep("b")}})
	f.Inject(sagatest.Fault{Step: "b", Attempt: 1, AfterDo: true})
	id := f.Start("rows", "", nil)

	if evs := f.Step(id); len(evs) != 2 || sagatest.Kind(evs[0]) != "step.completed:a" {
		t.Fatalf("first move = %v, want a completed and b scheduled", kinds(evs))
	}
	f.Run(id)
	if f.Runs("rows", "b", false) != 1 || rows(t, f, id+"/b/") != 0 {
		t.Fatalf("b ran %d times, %d effects committed; want 1 run and its effect rolled back",
			f.Runs("rows", "b", false), rows(t, f, id+"/b/"))
	}
	if evs := f.Step(id); len(evs) != 0 {
		t.Fatalf("a move before the backoff ended: %v", kinds(evs))
	}
	f.Advance(time.Second)
	f.Run(id)
	f.RequireState(id, saga.StateCompleted)
	if f.Runs("rows", "b", false) != 2 || rows(t, f, id+"/b/") != 1 || rows(t, f, id+"/a/") != 1 {
		t.Fatalf("b ran %d times; effects a %d b %d; want 2 runs, one effect each",
			f.Runs("rows", "b", false), rows(t, f, id+"/a/"), rows(t, f, id+"/b/"))
	}
	f.RequireHistory(id, []string{"step.scheduled:a", "step.completed:a", "step.scheduled:b", "step.failed:b",
		"step.scheduled:b", "step.completed:b"}, saga.CategoryStep)
	h := f.History(id)
	failed := h[slices.IndexFunc(h, func(e *saga.Event) bool { return e.Type == saga.EventStepFailed })]
	if !strings.Contains(failed.Data.Error, sagatest.ErrInjected.Error()) || failed.Data.Final || failed.Attempt != 1 {
		t.Fatalf("step.failed = %+v", failed)
	}
}

func TestPermanentFaultsAndCompensation(t *testing.T) {
	f := sagatest.New(t)
	registerRows(f)
	f.Register(saga.Definition{Name: "rows", Version: 1, Steps: []saga.Step{rowStep("a"), rowStep("b"), rowStep("c")}})
	f.FailPermanent("c", 0)
	id := f.Start("rows", "", nil)
	f.Run(id)
	info := f.RequireState(id, saga.StateCompensated)
	if !strings.Contains(info.Error, "injected") {
		t.Fatalf("saga error %q does not name the injected failure", info.Error)
	}
	f.RequireHistory(id, []string{"compensation.started:b", "compensation.completed:b",
		"compensation.started:a", "compensation.completed:a"}, saga.CategoryCompensation)
	if rows(t, f, id+"/a/compensate/") != 1 || rows(t, f, id+"/b/compensate/") != 1 || f.Runs("rows", "c", false) != 1 {
		t.Fatalf("compensation effects a %d b %d, c runs %d", rows(t, f, id+"/a/compensate/"),
			rows(t, f, id+"/b/compensate/"), f.Runs("rows", "c", false))
	}

	// A compensation that fails for good, only in saga type "other".
	f.Register(saga.Definition{Name: "other", Version: 1, Steps: []saga.Step{rowStep("a"), rowStep("c")}})
	f.Inject(sagatest.Fault{Saga: "other", Step: "a", Compensation: true, Permanent: true})
	id2 := f.Start("other", "", nil)
	f.Run(id2)
	f.RequireState(id2, saga.StateCompensationFailed)
	f.RequireEvents(id2, "step.failed:c", "compensation.failed:a")
	if f.Runs("rows", "a", true) != 1 { // the "rows" saga's compensation was not affected
		t.Fatalf("rows/a compensations: %d", f.Runs("rows", "a", true))
	}
}

func TestTransientFaultOnEveryAttemptExhaustsRetries(t *testing.T) {
	f := sagatest.New(t)
	registerRows(f)
	f.Register(saga.Definition{Name: "rows", Version: 1, Steps: []saga.Step{rowStep("a")}})
	f.FailTransient("a")
	id := f.Start("rows", "", nil)
	for range 3 {
		f.Run(id)
		f.Advance(time.Second)
	}
	f.RequireState(id, saga.StateFailed)
	if n := f.Runs("rows", "a", false); n != 3 {
		t.Fatalf("a ran %d times, want MaxAttempts (3)", n)
	}
	f.ClearFaults()
	id2 := f.Start("rows", "", nil)
	f.Run(id2)
	f.RequireState(id2, saga.StateCompleted)
}

// RunAll also runs the sagas a step starts.
func TestRunAllRunsChildSagas(t *testing.T) {
	f := sagatest.New(t)
	f.Register(saga.Definition{Name: "child", Version: 1, Steps: []saga.Step{{Name: "only",
		Do: func(context.Context, *saga.StepContext) (any, error) { return "ok", nil }}}})
	f.Register(saga.Definition{Name: "parent", Version: 1, Steps: []saga.Step{{Name: "spawn",
		Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
			_, _, err := f.Engine().Start(ctx, "child", saga.IDFor("child", sc.SagaID()), nil)
			return nil, err
		}}}})
	id := f.Start("parent", "", nil)
	if moves := f.RunAll(); moves < 2 {
		t.Fatalf("RunAll made %d moves", moves)
	}
	f.RequireState(id, saga.StateCompleted)
	f.RequireState(saga.IDFor("child", id), saga.StateCompleted)
}

// recorder is a sagatest.TB that records Fatalf instead of failing the test.
type recorder struct {
	*testing.T
	fatal []string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = append(r.fatal, fmt.Sprintf(format, args...))
}

func TestRequirementsFail(t *testing.T) {
	r := &recorder{T: t}
	f := sagatest.New(r)
	f.Register(saga.Definition{Name: "one", Version: 1, Steps: []saga.Step{{Name: "s",
		Do: func(context.Context, *saga.StepContext) (any, error) { return nil, nil }}}})
	id := f.Start("one", "", nil)
	f.Run(id)
	f.RequireEvents(id, "step.completed:s", "saga.completed") // in order: passes
	f.RequireState(id, saga.StateCompleted)
	if len(r.fatal) != 0 {
		t.Fatalf("passing requirements failed: %v", r.fatal)
	}
	f.RequireEvents(id, "saga.completed", "step.completed:s") // out of order
	f.RequireEvents(id, "step.failed:s")
	f.RequireHistory(id, []string{"step.completed:s"}) // not the whole history
	f.RequireState(id, saga.StateFailed)
	if len(r.fatal) != 4 || !strings.Contains(r.fatal[0], `lacks "step.completed:s"`) {
		t.Fatalf("failed requirements reported %d failures: %q", len(r.fatal), r.fatal)
	}
}

func kinds(evs []*saga.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, sagatest.Kind(e))
	}
	return out
}
