package sagatest_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/saga/sagatest"
)

// An order saga: reserve, charge (its first attempt fails), then wait for the parcel to
// be picked up, at most a day.
func Example() {
	t := newExampleTB() // in a test: sagatest.New(t)
	defer t.done()

	f := sagatest.New(t)
	f.Register(saga.Definition{Name: "order", Version: 1, Steps: []saga.Step{
		{Name: "reserve", Do: output("reserved"), Compensate: output("released")},
		{Name: "charge", Do: output("charged"),
			Retry: saga.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Minute}},
		{Name: "ship", Do: func(_ context.Context, sc *saga.StepContext) (any, error) {
			return sc.AwaitSignalTimeout("picked-up", 24*time.Hour)
		}},
	}})
	f.FailTransient("charge", 1)

	id := f.Start("order", "", nil)
	print := func(evs []*saga.Event) {
		for _, e := range evs {
			fmt.Printf("%-10s %s\n", e.Category(), sagatest.Kind(e))
		}
	}
	print(f.Step(id)) // reserve
	print(f.Run(id))  // charge fails; its retry is due in 1s
	fmt.Println("-- 1s later")
	f.Advance(time.Second)
	print(f.Run(id)) // charge, then ship waits
	fmt.Println("-- picked up")
	f.Signal(id, "picked-up", map[string]string{"carrier": "ACME"})
	print(f.Run(id)) // signal.received was appended by Signal, before this run

	f.RequireEvents(id, "step.failed:charge", "step.completed:charge", "signal.received", "saga.completed")
	fmt.Println(f.RequireState(id, saga.StateCompleted).State)
	// Output:
	// step       step.completed:reserve
	// step       step.scheduled:charge
	// step       step.failed:charge
	// step       step.scheduled:charge
	// -- 1s later
	// step       step.completed:charge
	// step       step.scheduled:ship
	// timer      timer.created:ship
	// step       step.waiting:ship
	// -- picked up
	// timer      timer.cancelled:ship
	// step       step.completed:ship
	// lifecycle  saga.completed
	// COMPLETED
}

func output(v string) saga.StepFunc {
	return func(context.Context, *saga.StepContext) (any, error) { return v, nil }
}

// exampleTB stands in for the *testing.T an example does not have.
type exampleTB struct {
	ctx      context.Context
	cancel   context.CancelFunc
	cleanups []func()
}

func newExampleTB() *exampleTB {
	ctx, cancel := context.WithCancel(context.Background())
	return &exampleTB{ctx: ctx, cancel: cancel}
}

func (t *exampleTB) Helper()                           {}
func (t *exampleTB) Log(args ...any)                   { fmt.Fprintln(os.Stderr, args...) }
func (t *exampleTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (t *exampleTB) Cleanup(fn func())                 { t.cleanups = append(t.cleanups, fn) }
func (t *exampleTB) Context() context.Context          { return t.ctx }
func (t *exampleTB) TempDir() string {
	dir, err := os.MkdirTemp("", "sagatest-example-")
	if err != nil {
		panic(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// done runs the cleanups, last registered first, as testing does.
func (t *exampleTB) done() {
	t.cancel()
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
