// Package sagatest runs saga definitions in tests: a real store (a fresh SQLite
// database in the test's temporary directory, or any store.Store), the real engine with
// a saga.ManualClock, step-by-step control, injected failures, signals, timers and
// assertions on the history. It uses only the saga package's public API, so what passes
// here is what the engine does in production.
//
// # Use
//
//	f := sagatest.New(t)                       // SQLite, clock at 2030-01-01, MaxStepsPerTx 1
//	command.Register(f.Bus(), myHandler)       // what the steps dispatch to
//	f.Register(mySagaDefinition)               // steps wrapped for fault injection
//	f.FailTransient("charge", 1)               // attempt 1 of "charge" fails, retried
//	id := f.Start("order", "", input)
//	f.Step(id)                                 // one recorded move; returns its events
//	f.Run(id)                                  // until it waits, backs off or ends
//	f.Advance(time.Second)                     // the clock, then the timers now due
//	f.Signal(id, "picked-up", payload)         // then f.Run(id)
//	f.RequireEvents(id, "step.failed:charge", "step.completed:charge", "saga.completed")
//	f.RequireState(id, saga.StateCompleted)
//
// Nothing runs in the background: the engine moves only inside Step, Run, RunAll and
// Advance (timers), so a test sees every intermediate state. A move is one transition
// of the runner (saga.Config.MaxTransitions = 1): a step run and its recorded outcome
// (completed with the next step scheduled, failed with its retry scheduled, or
// waiting), one compensation, or the saga's end. Steps run one per transaction unless
// Options.Config.MaxStepsPerTx says otherwise; the history is the same either way.
//
// # Faults
//
// Register wraps every Do and Compensate: a Fault (Inject, FailTransient, FailPermanent)
// matching the saga type, step, attempt and kind (forward or compensation) makes the run
// return its error, transient (retried by the step's RetryPolicy) or permanent (the saga
// compensates), before the step runs or, with AfterDo, after it ran, so that its writes
// are rolled back with its transaction. Faults are matched per attempt, not consumed: a
// step that waits and runs again with the same attempt meets the same fault.
//
// # History
//
// Events are named by Kind: "type:step" ("step.completed:charge") or the type alone
// ("saga.completed"). RequireEvents checks an ordered subsequence, RequireHistory the
// exact list (optionally of some categories, saga.EventCategory), Kinds and History
// return them for assertions of your own.
package sagatest
