package jobs_test

import (
	"testing"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/command/commandtest"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/saga"
)

// TestEveryCommandContract runs the command contract checks (user story 62.2) over
// every command the job path registers: each is listed by Commands(), registered for
// its Go type with the result type below, and survives the erased path (JSON round
// trip of the command and of its result, typed dispatch, type mismatch). A command
// registered without a case here fails the test.
func TestEveryCommandContract(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true, noEngineLoop: true})
	// New registers on the bus it is given; build a second Service over a fresh bus to
	// inspect it.
	bus := command.NewBus()
	reg := saga.NewRegistry()
	if err := jobs.RegisterSagas(reg); err != nil {
		t.Fatal(err)
	}
	eng, err := saga.New(e.st, reg, bus, saga.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.New(e.st, bus, eng, newProviders(t, e.cloud), e.cloud, jobs.Config{ServerURL: "http://x"}); err != nil {
		t.Fatal(err)
	}
	commandtest.CheckRegistered(t, bus, jobs.Commands()...)
	if got, want := len(jobs.Commands()), len(bus.Types()); got != want {
		t.Errorf("Commands() lists %d types, the bus has %d handlers: %v", got, want, bus.Types())
	}
	commandtest.CheckEveryCommand(t, bus,
		// Job path (provisioning.go, execution.go, commands.go).
		commandtest.For[jobs.CreateWorker, jobs.Outcome](),
		commandtest.For[jobs.DestroyWorker, jobs.Outcome](),
		commandtest.For[jobs.ReleaseWorker, jobs.Outcome](),
		commandtest.For[jobs.ValidateReservation, jobs.Outcome](),
		commandtest.For[jobs.AssignWorker, jobs.Outcome](),
		commandtest.For[jobs.DispatchJob, jobs.Outcome](),
		commandtest.For[jobs.DeliverRun, jobs.Outcome](),
		commandtest.For[jobs.CompleteJob, jobs.Outcome](),
		commandtest.For[jobs.MarkJobFailed, jobs.Outcome](),
		commandtest.For[jobs.MarkJobRunning, jobs.Outcome](),
		commandtest.For[jobs.NotifyWorkerReady, jobs.Outcome](),
		commandtest.For[jobs.RetryProvisioning, jobs.Outcome](),
		// Cancellation and timeout (cancel.go, timeout.go).
		commandtest.For[jobs.SendCancel, jobs.Outcome](),
		commandtest.For[jobs.FinishCancellation, jobs.Outcome](),
		commandtest.For[jobs.StartJobTimeout, jobs.Outcome](),
		commandtest.For[jobs.TerminateWorker, jobs.Outcome](),
		// Recovery (recovery.go).
		commandtest.For[jobs.StartRecovery, jobs.RecoveryOutcome](),
		commandtest.For[jobs.ReserveReplacement, jobs.RecoveryOutcome](),
		commandtest.For[jobs.TransferJob, jobs.RecoveryOutcome](),
		commandtest.For[jobs.AbandonJob, jobs.RecoveryOutcome](),
		// Warm pools (warm.go).
		commandtest.For[jobs.CreateWarmWorker, jobs.Outcome](),
	)
}
