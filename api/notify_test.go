package api_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/api"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/messaging"
)

func TestNotifierListensToJobEvents(t *testing.T) {
	ctx := t.Context()
	emb, err := messaging.StartEmbedded(ctx, messaging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	nc, _, err := messaging.Connect(ctx, emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	n := api.NewNotifier()
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.Listen(lctx, nc, nil) }()
	defer func() { stop(); <-done }()

	wake, unsub := n.Subscribe("job/j1")
	defer unsub()
	other, unsubOther := n.Subscribe("job/j2")
	defer unsubOther()

	ev, err := domain.NewEvent(domain.EventJobStateChanged, "j1", domain.JobStateChanged{From: domain.JobPending, To: domain.JobProvisioning})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(ev)
	// Listen subscribes asynchronously: publish until the wake-up arrives.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for woke := false; !woke; {
		if err := nc.Publish(messaging.EventSubject(domain.EventJobStateChanged), data); err != nil {
			t.Fatal(err)
		}
		select {
		case <-wake:
			woke = true
		case <-tick.C:
		case <-deadline:
			t.Fatal("no wake-up for a job event")
		}
	}
	select {
	case <-other:
		t.Fatal("a subscriber of another job was woken")
	default:
	}
	// Garbage is ignored.
	if err := nc.Publish(messaging.EventSubject(domain.EventJobStateChanged), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
