package command

import (
	"time"

	"github.com/hodei-jobs/hodei/internal/backoff"
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
// that one formula governs every retry in Hodei; it is internal/backoff's Delay, which
// the reconnect loops (agent, outbox listener, CLI) pace themselves with.
func Backoff(attempt int, base, max time.Duration, jitter float64, rnd func() float64) time.Duration {
	return backoff.Delay(attempt, base, max, jitter, rnd)
}
