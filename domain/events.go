package domain

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Event type names, written to the outbox and published as
// hodei.events.<entity>.<type> (the part before the first dot is the entity). The names
// are a contract: consumers subscribe to them.
const (
	EventJobQueued          = "job.queued"           // a job was accepted (PENDING)
	EventJobStateChanged    = "job.state_changed"    // any job transition
	EventJobCompleted       = "job.completed"        // a job reached a terminal state
	EventJobNeedsReview     = "job.needs_review"     // a job entered MANUAL_INTERVENTION_REQUIRED
	EventWorkerRegistered   = "worker.registered"    // a worker's agent registered (READY)
	EventWorkerStateChanged = "worker.state_changed" // any worker transition
)

// EventTypes returns every event type name (a fresh slice).
func EventTypes() []string {
	return []string{
		EventJobQueued, EventJobStateChanged, EventJobCompleted, EventJobNeedsReview,
		EventWorkerRegistered, EventWorkerStateChanged,
	}
}

// Event is a domain event as it goes into the outbox: its type, the id of the job or
// worker it is about, and a JSON payload.
type Event struct {
	Type     string          `json:"type"`
	EntityID string          `json:"entity_id"`
	Data     json.RawMessage `json:"data,omitempty"`
}

// Entity returns the entity part of the event type ("job" for "job.queued").
func (e Event) Entity() string {
	entity, _, _ := strings.Cut(e.Type, ".")
	return entity
}

// NewEvent builds an Event whose Data is data encoded as JSON.
func NewEvent(typ, entityID string, data any) (Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("event %s for %s: encode data: %w", typ, entityID, err)
	}
	return Event{Type: typ, EntityID: entityID, Data: raw}, nil
}

// JobStateChanged is the Data of EventJobStateChanged, EventJobCompleted and
// EventJobNeedsReview.
type JobStateChanged struct {
	From    JobState  `json:"from"`
	To      JobState  `json:"to"`
	Attempt int       `json:"attempt,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// JobStateEvents returns the events a job transition from → to causes: always
// job.state_changed, plus job.completed when `to` is terminal and job.needs_review
// when it asks for a human. It does not check the transition.
func JobStateEvents(jobID string, c JobStateChanged) ([]Event, error) {
	types := []string{EventJobStateChanged}
	if c.To.IsTerminal() {
		types = append(types, EventJobCompleted)
	}
	if c.To.RequiresManualReview() {
		types = append(types, EventJobNeedsReview)
	}
	out := make([]Event, 0, len(types))
	for _, t := range types {
		ev, err := NewEvent(t, jobID, c)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// WorkerStateChanged is the Data of EventWorkerStateChanged.
type WorkerStateChanged struct {
	From WorkerState `json:"from"`
	To   WorkerState `json:"to"`
	At   time.Time   `json:"at"`
}
