package jobs

import (
	"context"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/saga"
)

type workerSignal struct {
	WorkerID string `json:"worker_id"`
	// Failed (worker.registered only, exited.go): the worker's process ended before it
	// registered; the provisioning fails at once.
	Failed string `json:"failed,omitempty"`
	// Attempt (replacement.ready only): the job's attempt on that worker (a recovery
	// whose first replacement failed waits for a later one).
	Attempt int `json:"attempt,omitempty"`
}

type abortedSignal struct {
	Reason string `json:"reason,omitempty"`
}

// SagaTypes are the names of the saga types RegisterSagas registers.
func SagaTypes() []string {
	return []string{SagaExecution, SagaProvisioning, SagaTimeout, SagaCancellation, SagaRecovery}
}

// RegisterSagas adds the provisioning and execution saga definitions to reg. The steps
// need nothing but the commands' handlers (registered on the bus by New) and their
// saga's input, so this can run before the engine and the Service exist.
//
// Version 2 of the provisioning, execution and timeout sagas runs their provider calls
// and worker messages as activities (outside any transaction); version 1, whose steps
// made them inside the step's transaction, stays registered so that sagas started on
// it finish on its steps (new sagas start on the latest version). Version 2 of the
// recovery saga delivers RunJob to the replacement in an activity (recovery.go).
func RegisterSagas(reg *saga.Registry) error {
	defs := []saga.Definition{cancellationSaga(), warmWorkerSaga() /* warm.go */}
	for _, v := range []int{1, 2} {
		defs = append(defs, provisioningSaga(v), executionSaga(v), timeoutSaga(v) /* timeout.go */, recoverySaga(v) /* recovery.go */)
	}
	for _, d := range defs {
		if err := reg.Register(d); err != nil {
			return err
		}
	}
	return nil
}

// dispatch sends cmd through the step's (or activity's) dispatcher.
func dispatch(ctx context.Context, sc command.Dispatcher, cmd command.Command) (Outcome, error) {
	return command.Dispatch[Outcome](ctx, sc, cmd)
}

// withInput adapts a step body that needs the saga's decoded input (JSON, as Start
// stored it) into a saga.StepFunc: every step of the job path's sagas reads its input.
func withInput[I any](fn func(ctx context.Context, sc *saga.StepContext, in I) (any, error)) saga.StepFunc {
	return func(ctx context.Context, sc *saga.StepContext) (any, error) {
		var in I
		if err := sc.Input(&in); err != nil {
			return nil, err
		}
		return fn(ctx, sc, in)
	}
}

// activityWithInput is withInput for an activity.
func activityWithInput[I any](fn func(ctx context.Context, ac *saga.ActivityContext, in I) (any, error)) saga.ActivityFunc {
	return func(ctx context.Context, ac *saga.ActivityContext) (any, error) {
		var in I
		if err := ac.Input(&in); err != nil {
			return nil, err
		}
		return fn(ctx, ac, in)
	}
}
