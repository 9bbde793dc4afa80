package domain

import (
	"fmt"
	"time"
)

// JobState is the life-cycle state of a job. The names are a contract (API, CLI, DB).
type JobState string

const (
	JobPending                    JobState = "PENDING"
	JobProvisioning               JobState = "PROVISIONING"
	JobAssigned                   JobState = "ASSIGNED"
	JobRunning                    JobState = "RUNNING"
	JobSucceeded                  JobState = "SUCCEEDED"
	JobFailed                     JobState = "FAILED"
	JobTimedOut                   JobState = "TIMED_OUT"
	JobCancelling                 JobState = "CANCELLING"
	JobCancelled                  JobState = "CANCELLED"
	JobManualInterventionRequired JobState = "MANUAL_INTERVENTION_REQUIRED"
)

// Script is a job body run by an interpreter instead of an argv.
type Script struct {
	Content     string `json:"content"`
	Interpreter string `json:"interpreter,omitempty"` // default /bin/sh
}

// Resources a job asks for.
type Resources struct {
	CPUMillis   int64 `json:"cpu_millis,omitempty"`   // 1000 = one core
	MemoryBytes int64 `json:"memory_bytes,omitempty"` //
}

// JobSpec is what a user submits. Exactly one of Command and Script is set.
type JobSpec struct {
	Name        string            `json:"name,omitempty"`
	Command     []string          `json:"command,omitempty"`
	Script      *Script           `json:"script,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	WorkingDir  string            `json:"working_dir,omitempty"`
	Resources   Resources         `json:"resources"`
	Labels      map[string]string `json:"labels,omitempty"`
	Timeout     time.Duration     `json:"timeout,omitempty"` // 0 = no timeout
	MaxAttempts int               `json:"max_attempts,omitempty"`
	Priority    int               `json:"priority,omitempty"` // higher runs first
	// Namespace the job belongs to (DefaultNamespace when empty); tokens see jobs of
	// their namespaces only (package auth).
	Namespace string `json:"namespace,omitempty"`
	// Secrets names secrets of the job's namespace to set in its environment: only
	// the references, never a value (see SecretRef).
	Secrets []SecretRef `json:"secrets,omitempty"`
	// Image is the container image the job runs in ("" runs it on a provider without
	// images, e.g. local processes). Only container providers (docker) run images.
	Image string `json:"image,omitempty"`
	// Pull is the image pull policy (default PullIfNotPresent when Image is set).
	Pull PullPolicy `json:"pull,omitempty"`
	// Provider names the provider that must run the job ("" lets selection choose).
	Provider string `json:"provider,omitempty"`
	// Selector: the job runs on a provider carrying all these labels.
	Selector map[string]string `json:"selector,omitempty"`
	// TraceParent is the W3C traceparent of the request that submitted the job, set by
	// the server (never by a user, not part of the API): the sagas started for the job
	// later (provisioning, by the scheduler) join the job's trace through it.
	TraceParent string `json:"trace_parent,omitempty"`
}

// PullPolicy says when a container provider pulls the job's image.
type PullPolicy string

// Pull policies.
const (
	PullIfNotPresent PullPolicy = "if-not-present" // pull only when the engine lacks the image (default)
	PullNever        PullPolicy = "never"          // never pull: a missing image fails the job at once
	PullAlways       PullPolicy = "always"         // pull before every worker
)

// ParsePullPolicy accepts never, if-not-present, always ("" is if-not-present).
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch PullPolicy(s) {
	case "":
		return PullIfNotPresent, nil
	case PullIfNotPresent, PullNever, PullAlways:
		return PullPolicy(s), nil
	}
	return "", fmt.Errorf("pull policy %q: want never, if-not-present or always", s)
}

// Job is a submitted job and where it is in its life cycle.
type Job struct {
	ID         string    `json:"id"`
	Spec       JobSpec   `json:"spec"`
	State      JobState  `json:"state"`
	Attempt    int       `json:"attempt"`
	WorkerID   string    `json:"worker_id,omitempty"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	Resolution string    `json:"resolution,omitempty"` // admin resolution after manual review
	Notes      string    `json:"notes,omitempty"`      // admin notes
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}
