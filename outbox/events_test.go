package outbox_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/store"
)

func startNATS(t *testing.T) jetstream.JetStream {
	t.Helper()
	js := startNATSWithoutStreams(t)
	if err := messaging.EnsureStreams(ctxT(t, 20*time.Second), js); err != nil {
		t.Fatal(err)
	}
	return js
}

// startNATSWithoutStreams starts an embedded nats-server with JetStream but no stream
// (events published to it find nothing to take them) and connects to it.
func startNATSWithoutStreams(t *testing.T) jetstream.JetStream {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	e, err := messaging.StartEmbedded(ctx, messaging.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, js, err := messaging.Connect(ctx, e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), messaging.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// An event published but not marked (the relay crashed between the two) is published
// again by another relay once the lease expires, and JetStream keeps it once.
func TestEventPublishedButNotMarkedReachesJetStreamOnce(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	js := startNATS(t)
	pub := outbox.NewJetStreamPublisher(js)

	id, err := outbox.PublishEvent(ctx, st.Outbox(), "job", "succeeded", "job-1/succeeded", map[string]string{"job_id": "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	// The crashed relay: claims, publishes, never completes.
	claimed, err := st.Outbox().Claim(ctx, "crashed", 10, 300*time.Millisecond)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %d rows, %v", len(claimed), err)
	}
	if errs := pub.Publish(ctx, claimed); errs[0] != nil {
		t.Fatal(errs[0])
	}
	if n := streamMsgs(t, js); n != 1 {
		t.Fatalf("stream has %d messages after the first publish", n)
	}

	r := newRelay(t, st.Outbox(), newRecorder(nil), pub, outbox.Config{
		PollInterval: 20 * time.Millisecond, ReapInterval: 50 * time.Millisecond,
	})
	runRelay(t, r)
	eventually(t, 5*time.Second, "event row completed by the second relay", func() bool {
		return getRow(t, st.Outbox(), id).Status == store.OutboxCompleted
	})
	if m := getRow(t, st.Outbox(), id); m.Attempts != 2 {
		t.Fatalf("attempts %d, want 2 (published twice)", m.Attempts)
	}
	if n := streamMsgs(t, js); n != 1 {
		t.Fatalf("stream has %d messages after the re-publish, want 1", n)
	}

	// A second event goes through normally, on its own subject, with its headers.
	id2, err := outbox.PublishEvent(ctx, st.Outbox(), "worker", "ready", "worker-9/ready", map[string]string{"worker_id": "worker-9"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "second event completed", func() bool {
		return getRow(t, st.Outbox(), id2).Status == store.OutboxCompleted
	})
	s, err := js.Stream(ctx, messaging.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, "hodei.events.worker.ready")
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.Header.Get(jetstream.MsgIDHeader); got != strconv.FormatInt(id2, 10) {
		t.Errorf("Nats-Msg-Id %q, want the outbox id %d", got, id2)
	}
	var data map[string]string
	if err := json.Unmarshal(raw.Data, &data); err != nil || data["worker_id"] != "worker-9" {
		t.Errorf("event data %s", raw.Data)
	}
	if n := streamMsgs(t, js); n != 2 {
		t.Fatalf("stream has %d messages, want 2", n)
	}
	if _, err := outbox.PublishEvent(ctx, st.Outbox(), "job.x", "done", "k", nil); err == nil {
		t.Error("entity with a dot accepted")
	}
}

// An acknowledgement that never comes (here a plain subscriber takes the subject and
// never answers, as a restarted cluster without a stream leader drops a publish) fails
// the publish after AckTimeout instead of holding the relay forever; the row can then
// be retried.
func TestPublishWithoutAckFailsAfterAckTimeout(t *testing.T) {
	ctx := ctxT(t, 20*time.Second)
	e, err := messaging.StartEmbedded(ctx, messaging.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, js, err := messaging.Connect(ctx, e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// No HODEI_EVENTS stream: the silent subscriber is the only interest.
	sub, err := nc.SubscribeSync(messaging.EventsSubjectPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	pub := outbox.NewJetStreamPublisher(js)
	pub.AckTimeout = 300 * time.Millisecond
	done := make(chan []error, 1)
	go func() {
		done <- pub.Publish(context.Background(), []*store.OutboxMessage{
			{ID: 1, Kind: store.KindEvent, Type: "job.succeeded", IdempotencyKey: "k1", Payload: []byte(`{}`)},
			{ID: 2, Kind: store.KindEvent, Type: "job.failed", IdempotencyKey: "k2", Payload: []byte(`{}`)},
		})
	}()
	select {
	case errs := <-done:
		for i, err := range errs {
			if err == nil {
				t.Errorf("event %d: published without an acknowledgement", i)
			}
		}
	case <-ctx.Done():
		t.Fatal("Publish still waiting for acknowledgements that never come")
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("the events never reached the subscriber: %v", err)
	}
}

// An event that cannot be published for longer than its attempts allow (here: no
// stream takes it, as while NATS is away) is never dead-lettered: it is retried at
// least every EventMaxBackoff, and reaches JetStream once a stream takes it.
func TestEventIsRetriedUntilNATSTakesIt(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	js := startNATSWithoutStreams(t)
	pub := outbox.NewJetStreamPublisher(js)
	pub.AckTimeout = 200 * time.Millisecond
	// With MaxBackoff alone the 8th attempt would come after ~5 s; the event cap makes
	// it ~0.7 s.
	r := newRelay(t, st.Outbox(), newRecorder(nil), pub, outbox.Config{PollInterval: 10 * time.Millisecond,
		BaseBackoff: 20 * time.Millisecond, MaxBackoff: 10 * time.Second, EventMaxBackoff: 100 * time.Millisecond,
		Jitter: -1, MaxAttempts: 2})
	id, err := outbox.PublishEvent(ctx, st.Outbox(), "job", "worker_lost", "job-1/worker_lost", map[string]string{"job_id": "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	runRelay(t, r)
	eventually(t, 4*time.Second, "eight failed attempts of the event", func() bool {
		m := getRow(t, st.Outbox(), id)
		if m.Status == store.OutboxDeadLetter {
			t.Fatalf("event dead-lettered after %d attempts (%s)", m.Attempts, m.LastError)
		}
		return m.Attempts >= 8
	})
	if err := messaging.EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the event completed", func() bool {
		return getRow(t, st.Outbox(), id).Status == store.OutboxCompleted
	})
	if n := streamMsgs(t, js); n != 1 {
		t.Fatalf("%d messages in the stream, want 1", n)
	}
}
