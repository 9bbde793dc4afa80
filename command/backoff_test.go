package command_test

import (
	"math"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

func TestBackoffGrowsAndCaps(t *testing.T) {
	half := func() float64 { return 0.5 } // jitter factor exactly 1
	base, max := 5*time.Second, 30*time.Minute
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second}
	for n, w := range want {
		if got := command.Backoff(n, base, max, 0.1, half); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, w)
		}
	}
	for _, n := range []int{9, 10, 62, 63, 64, 1000, math.MaxInt} {
		if got := command.Backoff(n, base, max, 0, nil); got != max {
			t.Errorf("Backoff(%d) = %s, want the cap %s", n, got, max)
		}
	}
	if got := command.Backoff(-3, base, max, 0, nil); got != base {
		t.Errorf("Backoff(-3) = %s, want base", got)
	}
	if got := command.Backoff(3, 0, max, 0.5, nil); got != 0 {
		t.Errorf("zero base gives %s, want 0", got)
	}
	if got := command.Backoff(2, base, time.Second, 0, nil); got != base {
		t.Errorf("max below base gives %s, want base", got)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	base, max, j := 100*time.Millisecond, 10*time.Second, 0.1
	// Extremes of rnd give exactly the ±jitter bounds.
	if got := command.Backoff(2, base, max, j, func() float64 { return 0 }); got != 360*time.Millisecond {
		t.Errorf("rnd 0: %s, want 360ms", got)
	}
	nearOne := func() float64 { return math.Nextafter(1, 0) }
	if got := command.Backoff(2, base, max, j, nearOne); got < 439*time.Millisecond || got > 440*time.Millisecond {
		t.Errorf("rnd ~1: %s, want just under 440ms", got)
	}
	// A deterministic sweep stays inside the bounds and the midpoints grow.
	var prevMid time.Duration
	for n := range 12 {
		nominal := command.Backoff(n, base, max, 0, nil)
		lo := time.Duration(float64(nominal) * (1 - j))
		hi := time.Duration(float64(nominal) * (1 + j))
		for i := range 100 {
			r := float64(i) / 100
			got := command.Backoff(n, base, max, j, func() float64 { return r })
			if got < lo || got > hi {
				t.Fatalf("Backoff(%d) with rnd %.2f = %s outside [%s, %s]", n, r, got, lo, hi)
			}
		}
		if nominal < prevMid {
			t.Fatalf("Backoff(%d) = %s shrank from %s", n, nominal, prevMid)
		}
		prevMid = nominal
	}
	if prevMid != max {
		t.Errorf("after 12 failures the nominal delay is %s, want the cap %s", prevMid, max)
	}
	// The default source also stays in bounds.
	for range 200 {
		if got := command.Backoff(1, base, max, j, nil); got < 180*time.Millisecond || got > 220*time.Millisecond {
			t.Fatalf("default rnd: %s outside [180ms, 220ms]", got)
		}
	}
}
