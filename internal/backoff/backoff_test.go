package backoff_test

import (
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/backoff"
)

func TestPacerDoublesCapsAndResets(t *testing.T) {
	p := backoff.Pacer{Base: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Next(); got != w*time.Millisecond {
			t.Fatalf("Next #%d = %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
	p.Reset()
	if got := p.Next(); got != 100*time.Millisecond {
		t.Fatalf("Next after Reset = %s, want the base", got)
	}
	// A lower Max takes effect at once (the agent learns the heartbeat interval).
	p.Max = 150 * time.Millisecond
	if got := p.Next(); got != 150*time.Millisecond {
		t.Fatalf("Next after lowering Max = %s, want 150ms", got)
	}
	// Many failures never overflow.
	for range 1000 {
		p.Next()
	}
	if got := p.Next(); got != 150*time.Millisecond {
		t.Fatalf("Next after 1000 failures = %s, want the cap", got)
	}
}

func TestPacerJitter(t *testing.T) {
	p := backoff.Pacer{Base: time.Second, Max: time.Minute, Jitter: 0.2, Rand: func() float64 { return 0 }}
	if got := p.Next(); got != 800*time.Millisecond {
		t.Fatalf("lowest jitter = %s, want 800ms", got)
	}
	p = backoff.Pacer{Base: time.Second, Max: time.Minute, Jitter: 0.2, Rand: func() float64 { return 0.5 }}
	p.Next()
	if got := p.Next(); got != 2*time.Second {
		t.Fatalf("second delay with centred jitter = %s, want 2s", got)
	}
	var zero backoff.Pacer
	if got := zero.Next(); got != 0 {
		t.Fatalf("zero Pacer waits %s, want 0", got)
	}
}
