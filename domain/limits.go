package domain

// Limits of what workers and clients send, enforced at the edge (api) and again by the
// job logic (jobs), defined once here.
const (
	MaxIDBytes          = 128      // a job or worker id
	MaxSecretBytes      = 512      // a one-time password or a session token
	MaxMessageIDBytes   = 128      // a worker message's id
	MaxLogLinesPerBatch = 1000     // lines of one log batch
	MaxLogLineBytes     = 64 << 10 // one log line
	MaxResultErrorBytes = 4 << 10  // a job result's error text
)
