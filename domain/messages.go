package domain

import "time"

// CancelRequest asks a worker to stop a job: SIGTERM, then SIGKILL after Grace.
type CancelRequest struct {
	JobID   string
	Attempt int // the job's attempt on that worker
	// Round distinguishes the successive CancelJob messages of one cancellation (their
	// message ids differ); a re-send of one round keeps its id, so the agent drops it.
	Round  int
	Reason string
	Grace  time.Duration
}

// JobResult is what a worker reports when its job ended.
type JobResult struct {
	JobID     string
	ExitCode  int
	Error     string // set when the job could not start or did not exit normally
	Cancelled bool
}
