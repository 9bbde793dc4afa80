package command

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff returns the delay before retry number attempt+1: min(base·2^attempt, max),
// then spread by ±jitter (a fraction: 0.1 is ±10 %).
//
// attempt counts the failures so far, starting at 0: attempt 0 gives base, 1 gives
// 2·base, and so on until max. A negative attempt counts as 0. The jitter is applied after
// the cap, so a result may exceed max by up to max·jitter; it is never negative.
// jitter <= 0 disables it and values above 1 are treated as 1. rnd returns a number
// in [0, 1) (nil uses math/rand/v2); tests pass a fixed function to get exact values.
//
// The retry middleware, the outbox relay and the saga runner share this function so
// that one formula governs every retry in Hodei.
func Backoff(attempt int, base, max time.Duration, jitter float64, rnd func() float64) time.Duration {
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
