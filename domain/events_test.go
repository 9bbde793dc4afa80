package domain_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

func TestEventTypeNames(t *testing.T) {
	seen := map[string]bool{}
	for _, typ := range domain.EventTypes() {
		entity, name, ok := strings.Cut(typ, ".")
		if !ok || (entity != "job" && entity != "worker") || name == "" || strings.Contains(name, ".") {
			t.Errorf("event type %q is not <job|worker>.<name>", typ)
		}
		if seen[typ] {
			t.Errorf("event type %q listed twice", typ)
		}
		seen[typ] = true
		if got := (domain.Event{Type: typ}).Entity(); got != entity {
			t.Errorf("Event{%q}.Entity() = %q, want %q", typ, got, entity)
		}
	}
}

func TestJobStateEvents(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		to   domain.JobState
		want []string
	}{
		{domain.JobRunning, []string{"job.state_changed"}},
		{domain.JobSucceeded, []string{"job.state_changed", "job.completed"}},
		{domain.JobCancelled, []string{"job.state_changed", "job.completed"}},
		{domain.JobManualInterventionRequired, []string{"job.state_changed", "job.needs_review"}},
	}
	for _, tc := range cases {
		evs, err := domain.JobStateEvents("j1", domain.JobStateChanged{From: domain.JobAssigned, To: tc.to, Attempt: 2, At: at})
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, ev := range evs {
			types = append(types, ev.Type)
			if ev.EntityID != "j1" {
				t.Errorf("EntityID = %q, want j1", ev.EntityID)
			}
			var data domain.JobStateChanged
			if err := json.Unmarshal(ev.Data, &data); err != nil || data.From != domain.JobAssigned || data.To != tc.to || !data.At.Equal(at) || data.Attempt != 2 {
				t.Errorf("data %s does not round-trip (%v)", ev.Data, err)
			}
		}
		if !slices.Equal(types, tc.want) {
			t.Errorf("to %s: events %v, want %v", tc.to, types, tc.want)
		}
	}
}

func TestNewEventEncodeError(t *testing.T) {
	_, err := domain.NewEvent(domain.EventJobQueued, "j1", make(chan int))
	if err == nil || !strings.Contains(err.Error(), "job.queued") {
		t.Errorf("err = %v, want an encode error naming the event type", err)
	}
}
