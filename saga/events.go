package saga

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// History event types.
const (
	EventStarted               = "saga.started"
	EventStepScheduled         = "step.scheduled"
	EventStepCompleted         = "step.completed"
	EventStepFailed            = "step.failed"
	EventStepWaiting           = "step.waiting"
	EventCompensationStarted   = "compensation.started"
	EventCompensationCompleted = "compensation.completed"
	EventCompensationFailed    = "compensation.failed"
	EventTimerCreated          = "timer.created"
	EventTimerFired            = "timer.fired"
	EventTimerCancelled        = "timer.cancelled"
	EventSignalReceived        = "signal.received"
	EventCancelRequested       = "saga.cancel_requested"
	EventSnapshotTaken         = "snapshot.taken"
	EventCompleted             = "saga.completed"
	EventFailed                = "saga.failed"
	EventCompensated           = "saga.compensated"
	EventCompensationGaveUp    = "saga.compensation_failed"
	EventCancelled             = "saga.cancelled"
	// EventIncidentRecorded is an observation about the saga (Engine.RecordIncident);
	// the fold ignores it.
	EventIncidentRecorded = "incident.recorded"
)

// EventCategory groups history event types so that a reader (an operator, `hodei saga
// show`, the admin API's filter) can pick out what it looks for.
type EventCategory string

// Event categories.
const (
	// CategoryLifecycle: the saga as a whole: started, cancel requested, snapshot taken,
	// and its end (completed, failed, compensated, compensation failed, cancelled).
	CategoryLifecycle EventCategory = "lifecycle"
	// CategoryStep: a forward step scheduled, completed, failed or waiting.
	CategoryStep EventCategory = "step"
	// CategoryCompensation: a compensation started, completed or failed.
	CategoryCompensation EventCategory = "compensation"
	// CategoryTimer: a durable timer created, fired or cancelled.
	CategoryTimer EventCategory = "timer"
	// CategorySignal: a signal received.
	CategorySignal EventCategory = "signal"
	// CategoryIncident: an observation recorded by Engine.RecordIncident.
	CategoryIncident EventCategory = "incident"
)

// Categories lists every EventCategory.
func Categories() []EventCategory {
	return []EventCategory{CategoryLifecycle, CategoryStep, CategoryCompensation, CategoryTimer,
		CategorySignal, CategoryIncident}
}

// CategoryOf returns the category of a history event type, or "" for a type this
// version of the engine does not know.
func CategoryOf(eventType string) EventCategory {
	switch eventType {
	case EventStarted, EventCancelRequested, EventSnapshotTaken, EventCompleted, EventFailed,
		EventCompensated, EventCompensationGaveUp, EventCancelled:
		return CategoryLifecycle
	case EventStepScheduled, EventStepCompleted, EventStepFailed, EventStepWaiting:
		return CategoryStep
	case EventCompensationStarted, EventCompensationCompleted, EventCompensationFailed:
		return CategoryCompensation
	case EventTimerCreated, EventTimerFired, EventTimerCancelled:
		return CategoryTimer
	case EventSignalReceived:
		return CategorySignal
	case EventIncidentRecorded:
		return CategoryIncident
	}
	return ""
}

// Category is CategoryOf(e.Type).
func (e *Event) Category() EventCategory { return CategoryOf(e.Type) }

// Event is a decoded history event.
type Event struct {
	Seq          int64
	Type         string
	Step         string
	Attempt      int
	Codec        string
	Data         EventData
	TraceContext map[string]string
	Time         time.Time
}

// timerState is what the fold knows about one timer.
type timerState struct {
	ID        string    `json:"id"`
	FireAt    time.Time `json:"fire_at"`
	Fired     bool      `json:"fired,omitempty"`
	Cancelled bool      `json:"cancelled,omitempty"`
}

// sagaState is the fold of a saga's history: everything the runner needs to decide the
// next move. It is what snapshots store (as JSON).
type sagaState struct {
	Status State `json:"status"`
	// Step is the index of the current forward step (len(steps) once all completed).
	Step int `json:"step"`
	// Attempt is the attempt of the scheduled run of the current step or compensation;
	// Scheduled says it was recorded and has no outcome yet.
	Attempt   int       `json:"attempt"`
	Scheduled bool      `json:"scheduled"`
	NotBefore time.Time `json:"not_before,omitzero"`
	// Completed lists the indexes of completed forward steps in completion order.
	Completed []int `json:"completed,omitempty"`
	// Comp is the position in Completed of the next compensation (counting down).
	Comp         int                        `json:"comp"`
	Compensated  int                        `json:"compensated"`
	Outputs      map[string]json.RawMessage `json:"outputs,omitempty"`
	Signals      map[string]json.RawMessage `json:"signals,omitempty"`
	Timers       map[string]*timerState     `json:"timers,omitempty"`
	Error        string                     `json:"error,omitempty"`
	Cancelling   bool                       `json:"cancelling,omitempty"`
	LastSeq      int64                      `json:"last_seq"`
	WaitingSince int64                      `json:"waiting_since,omitempty"`
	// Trace is the W3C trace context the saga started in (of its first event that has
	// one): every run of the saga continues that trace (telemetry.go).
	Trace map[string]string `json:"trace,omitempty"`
}

func newState() *sagaState {
	return &sagaState{Status: StateRunning, Outputs: map[string]json.RawMessage{},
		Signals: map[string]json.RawMessage{}, Timers: map[string]*timerState{}}
}

func (s *sagaState) ensureMaps() {
	if s.Outputs == nil {
		s.Outputs = map[string]json.RawMessage{}
	}
	if s.Signals == nil {
		s.Signals = map[string]json.RawMessage{}
	}
	if s.Timers == nil {
		s.Timers = map[string]*timerState{}
	}
}

// startCompensation turns the saga around after a final failure or a cancel.
func (s *sagaState) startCompensation() {
	s.Status = StateCompensating
	s.Comp = len(s.Completed) - 1
	s.Scheduled = false
	s.Attempt = 0
	s.NotBefore = time.Time{}
}

// wake moves a parked saga back to work.
func (s *sagaState) wake() {
	if s.Status == StateWaiting {
		s.Status = StateRunning
	}
}

// apply folds one event into s. The fold is pure: the same history always gives the
// same state.
func (s *sagaState) apply(e *Event) error {
	if e.Seq != s.LastSeq+1 {
		return fmt.Errorf("saga: history gap: event seq %d after %d", e.Seq, s.LastSeq)
	}
	s.LastSeq = e.Seq
	if s.Trace == nil && len(e.TraceContext) > 0 {
		s.Trace = e.TraceContext
	}
	d := &e.Data
	switch e.Type {
	case EventStarted:
		s.Status = StateRunning
	case EventStepScheduled:
		s.Step, s.Attempt, s.Scheduled, s.NotBefore = d.Index, e.Attempt, true, d.NotBefore
	case EventStepCompleted:
		s.Outputs[e.Step] = json.RawMessage(d.Output)
		s.Completed = append(s.Completed, d.Index)
		s.Step, s.Attempt, s.Scheduled, s.NotBefore = d.Index+1, 0, false, time.Time{}
		s.Status = StateRunning
	case EventStepFailed:
		s.Scheduled = false
		if d.Final {
			s.Error = fmt.Sprintf("step %s attempt %d: %s", e.Step, e.Attempt, d.Error)
			s.startCompensation()
		}
	case EventStepWaiting:
		s.Status = StateWaiting
		s.WaitingSince = e.Seq
	case EventCompensationStarted:
		s.Comp, s.Attempt, s.Scheduled, s.NotBefore = d.Index, e.Attempt, true, d.NotBefore
	case EventCompensationCompleted:
		s.Comp--
		s.Compensated++
		s.Attempt, s.Scheduled, s.NotBefore = 0, false, time.Time{}
	case EventCompensationFailed:
		s.Scheduled = false
		if d.Final {
			s.Error = fmt.Sprintf("%s; compensation of %s attempt %d: %s", s.Error, e.Step, e.Attempt, d.Error)
			s.Status = StateCompensationFailed
		}
	case EventTimerCreated:
		s.Timers[d.Name] = &timerState{ID: d.TimerID, FireAt: d.FireAt}
	case EventTimerFired:
		if t := s.Timers[d.Name]; t != nil && !t.Cancelled {
			t.Fired = true
			s.wake()
		}
	case EventTimerCancelled:
		if t := s.Timers[d.Name]; t != nil {
			t.Cancelled = true
		}
	case EventSignalReceived:
		if _, seen := s.Signals[d.Name]; !seen { // the first delivery wins
			s.Signals[d.Name] = json.RawMessage(d.Output)
		}
		s.wake()
	case EventCancelRequested:
		if !s.Status.Terminal() && s.Status != StateCompensating && s.Status != StateCompensationFailed {
			s.Cancelling = true
			s.Error = "cancelled: " + d.Error
			s.startCompensation()
		}
	case EventSnapshotTaken, EventIncidentRecorded:
	case EventCompleted:
		s.Status = StateCompleted
	case EventFailed:
		s.Status = StateFailed
	case EventCompensated:
		s.Status = StateCompensated
	case EventCompensationGaveUp:
		s.Status = StateCompensationFailed
	case EventCancelled:
		s.Status = StateCancelled
	default:
		return fmt.Errorf("saga: unknown event type %q at seq %d", e.Type, e.Seq)
	}
	return nil
}

// decodeEvents turns stored events into Events.
func decodeEvents(cs codecSet, in []*store.SagaEvent) ([]*Event, error) {
	out := make([]*Event, 0, len(in))
	for _, se := range in {
		d, err := cs.decode(se.Codec, se.Payload)
		if err != nil {
			return nil, fmt.Errorf("saga %s seq %d: %w", se.SagaID, se.Seq, err)
		}
		out = append(out, &Event{Seq: se.Seq, Type: se.Type, Step: se.Step, Attempt: se.Attempt,
			Codec: se.Codec, Data: *d, TraceContext: se.TraceContext, Time: se.CreatedAt})
	}
	return out, nil
}
