package jobs

import (
	"sync"
	"time"
)

// otpStash hands a worker's one-time password from the scheduler's transaction, which
// commits its hash with the worker row, to the create-worker activity that runs right
// after on the same node, so that the activity needs no transaction of its own
// (startWorker). Only the plain password is kept, in memory, once: take removes it.
// Anything else — the activity running on another node, after a restart, on a retry, or
// so late that little of the password's lifetime is left — finds nothing and rotates
// the password in a transaction as before (RotateOTP).
type otpStash struct {
	mu sync.Mutex
	m  map[string]stashedOTP
}

type stashedOTP struct {
	plain   string
	expires time.Time // the stored password's expiry
	useBy   time.Time // after this, too little of its lifetime is left: rotate instead
}

// put keeps workerID's password; entries past their useBy are dropped on the way.
func (o *otpStash) put(workerID, plain string, now, expires time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[string]stashedOTP{}
	}
	for id, e := range o.m {
		if !now.Before(e.useBy) {
			delete(o.m, id)
		}
	}
	o.m[workerID] = stashedOTP{plain: plain, expires: expires, useBy: now.Add(expires.Sub(now) / 2)}
}

// take returns workerID's stashed password and removes it; ok is false when there is
// none usable at now.
func (o *otpStash) take(workerID string, now time.Time) (plain string, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, found := o.m[workerID]
	delete(o.m, workerID)
	if !found || !now.Before(e.useBy) {
		return "", false
	}
	return e.plain, true
}
