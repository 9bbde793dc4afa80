package natstest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Debian's server is of the 2.9 line, the module build of go.mod's version; a node
// stopped and started again keeps its JetStream store (file storage).
func TestServersAndRestartKeepsStore(t *testing.T) {
	deb, err := DebianServer()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := Version(deb); err != nil || !strings.HasPrefix(v, "2.9.") {
		t.Fatalf("Debian's nats-server: %q, %v", v, err)
	}
	mod, err := ModuleServer()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := Version(mod); err != nil || strings.HasPrefix(v, "2.9.") {
		t.Fatalf("module nats-server: %q, %v", v, err)
	}
	for _, bin := range []string{deb, mod} {
		c := Start(t, bin, 1)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		publish := func() uint64 {
			nc, err := nats.Connect(c.URLs())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, "t.x", []byte("x")); err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return info.State.Msgs
		}
		if n := publish(); n != 1 {
			t.Fatalf("%s: %d messages, want 1", bin, n)
		}
		c.Nodes[0].Stop()
		if c.Nodes[0].Running() {
			t.Fatalf("%s: node running after Stop", bin)
		}
		if err := c.Nodes[0].Start(); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitJetStream(ctx); err != nil {
			t.Fatal(err)
		}
		if n := publish(); n != 2 {
			t.Fatalf("%s: %d messages after the restart, want 2 (the store kept)", bin, n)
		}
	}
}
