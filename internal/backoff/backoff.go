// Package backoff is Hodei's one retry-delay formula, min(base·2^n, max) ± jitter, and
// a small pacer for reconnect loops built on it. command.Backoff (the retry
// middleware, the outbox relay, the saga runner) is Delay; the agent's reconnects, the
// PostgreSQL outbox listener, the CLI's stream retries and the destroy loop of the job
// service use Pacer. It has no dependencies beyond the standard library, so the worker
// agent can use it without pulling in the command bus.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Delay returns the delay before retry number attempt+1: min(base·2^attempt, max),
// then spread by ±jitter (a fraction: 0.1 is ±10 %).
//
// attempt counts the failures so far, starting at 0: attempt 0 gives base, 1 gives
// 2·base, and so on until max. A negative attempt counts as 0. The jitter is applied after
// the cap, so a result may exceed max by up to max·jitter; it is never negative.
// jitter <= 0 disables it and values above 1 are treated as 1. rnd returns a number
// in [0, 1) (nil uses math/rand/v2); tests pass a fixed function to get exact values.
func Delay(attempt int, base, max time.Duration, jitter float64, rnd func() float64) time.Duration {
	if base <= 0 {
		return 0
	}
	if max < base {
		max = base
	}
	if attempt < 0 {
		attempt = 0
	}
	d := max
	// base·2^attempt without overflow: shift only while it stays below max.
	if attempt < 63 && base <= max>>uint(attempt) {
		d = base << uint(attempt)
	}
	if jitter <= 0 {
		return d
	}
	if jitter > 1 {
		jitter = 1
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	f := 1 + jitter*(2*rnd()-1) // in [1-jitter, 1+jitter)
	out := float64(d) * f
	if out >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	if out < 0 {
		return 0
	}
	return time.Duration(out)
}

// Pacer paces the attempts of one retry or reconnect loop: Next returns Delay for the
// failures counted so far and counts one more; Reset starts over after a success. The
// fields may change between calls (the agent lowers Max once it knows the server's
// heartbeat interval). A Pacer is not safe for concurrent use; the zero value never
// waits.
type Pacer struct {
	Base, Max time.Duration
	// Jitter is the fraction Delay spreads each delay by (0: none).
	Jitter float64
	// Rand is the jitter source (nil: math/rand/v2).
	Rand func() float64

	failures int
}

// Next returns the delay before the next attempt and counts a failure.
func (p *Pacer) Next() time.Duration {
	d := Delay(p.failures, p.Base, p.Max, p.Jitter, p.Rand)
	if p.failures < 64 {
		p.failures++
	}
	return d
}

// Reset forgets the failures: the next delay is Base again.
func (p *Pacer) Reset() { p.failures = 0 }
