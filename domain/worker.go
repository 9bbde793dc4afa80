package domain

import "time"

// WorkerState is the life-cycle state of a worker.
type WorkerState string

const (
	WorkerCreating    WorkerState = "CREATING"
	WorkerReady       WorkerState = "READY"
	WorkerBusy        WorkerState = "BUSY"
	WorkerTerminating WorkerState = "TERMINATING"
	WorkerTerminated  WorkerState = "TERMINATED"
)

// Worker is a provisioned execution host running the hodei agent.
type Worker struct {
	ID       string            `json:"id"`
	Provider string            `json:"provider"`
	State    WorkerState       `json:"state"`
	JobID    string            `json:"job_id,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Owner is the node (control-plane replica) that created the worker; operations on
	// a worker of a node-local provider run there (provider/routing).
	Owner         string    `json:"owner,omitempty"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}
