package messaging

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestEmbeddedStreamDeduplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := StartEmbedded(ctx, Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, js, err := Connect(ctx, e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second call updates the same stream.
	if err := EnsureStreams(ctx, js); err != nil {
		t.Fatalf("second EnsureStreams: %v", err)
	}
	s, err := js.Stream(ctx, EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Duplicates; got < 2*time.Minute {
		t.Fatalf("duplicate window %s, want >= 2m", got)
	}
	for range 2 {
		m := nats.NewMsg(EventSubject("job.succeeded"))
		m.Data = []byte(`{}`)
		m.Header.Set(jetstream.MsgIDHeader, "42")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, EventSubject("worker.ready"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2 (one duplicate dropped)", info.State.Msgs)
	}
	if _, err := js.Publish(ctx, "other.subject", []byte(`{}`)); err == nil {
		t.Fatal("publish outside hodei.events.> was accepted by JetStream")
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{Port: 70000}).Validate(); err == nil {
		t.Fatal("port 70000 accepted")
	}
	if _, _, err := Connect(context.Background(), ""); err == nil {
		t.Fatal("empty url accepted")
	}
}
