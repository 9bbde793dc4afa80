package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// newSecret returns a random 32-byte secret (base64url, no padding) and its SHA-256.
func newSecret() (plain string, hash []byte, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, fmt.Errorf("jobs: random secret: %w", err)
	}
	plain = base64.RawURLEncoding.EncodeToString(b[:])
	return plain, hashSecret(plain), nil
}

func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func checkID(field, v string) error {
	if v == "" || len(v) > MaxIDLen {
		return fmt.Errorf("%w: %s must be 1..%d bytes, got %d", ErrInvalidInput, field, MaxIDLen, len(v))
	}
	return nil
}

// RegisterWorker exchanges a worker's one-time password for a session token. In one
// transaction it redeems the password (single use), moves the worker to READY, signals
// its provisioning saga and writes the worker.registered event. An unknown, reused or
// expired password is refused with ErrOTPUnknown, ErrOTPReused or ErrOTPExpired (all
// matching ErrInvalidCredentials) and logged; the password itself is never logged.
func (s *Service) RegisterWorker(ctx context.Context, workerID, otp string) (string, error) {
	if err := checkID("worker_id", workerID); err != nil {
		return "", err
	}
	if otp == "" || len(otp) > MaxSecretLen {
		s.log.Warn("worker registration refused", "worker", workerID, "reason", "malformed one-time password")
		return "", fmt.Errorf("worker %s: %w", workerID, ErrOTPUnknown)
	}
	token, tokenHash, err := newSecret()
	if err != nil {
		return "", err
	}
	now := s.cfg.Now()
	err = s.st.InTx(ctx, func(ctx context.Context) error {
		if err := s.st.Credentials().RedeemOTP(ctx, workerID, hashSecret(otp), tokenHash, now); err != nil {
			return err
		}
		w, err := s.st.Workers().UpdateState(ctx, workerID, domain.WorkerReady, now, registeredMutate(now))
		if err != nil {
			return err
		}
		if w.JobID == "" && w.Labels[labelPool] != "" { // warm.go: a pool's worker
			return s.warmRegistered(ctx, w, now)
		}
		j, err := s.st.Jobs().Get(ctx, w.JobID)
		if err != nil {
			return err
		}
		err = s.engine.Signal(ctx, ProvisioningSagaID(j.ID, j.Attempt), SignalWorkerRegistered, workerSignal{WorkerID: workerID})
		if err != nil {
			return fmt.Errorf("signal provisioning of job %s: %w", j.ID, err)
		}
		ev, err := domain.NewEvent(domain.EventWorkerRegistered, workerID, map[string]any{"job_id": j.ID, "at": now.UTC()})
		if err != nil {
			return err
		}
		return s.publish(ctx, ev, "worker/"+workerID+"/registered")
	})
	if err == nil {
		s.log.Info("worker registered", "worker", workerID)
		return token, nil
	}
	var reason string
	switch {
	case errors.Is(err, store.ErrOTPUsed):
		reason, err = "one-time password already used", fmt.Errorf("worker %s: %w", workerID, ErrOTPReused)
	case errors.Is(err, store.ErrOTPExpired):
		reason, err = "one-time password expired", fmt.Errorf("worker %s: %w", workerID, ErrOTPExpired)
	case errors.Is(err, store.ErrNotFound):
		reason, err = "unknown one-time password", fmt.Errorf("worker %s: %w", workerID, ErrOTPUnknown)
	case errors.Is(err, domain.ErrIllegalTransition):
		// The password matched but the worker is no longer waiting to register.
		reason, err = "worker is not waiting to register", fmt.Errorf("worker %s: %w", workerID, ErrOTPReused)
	default:
		return "", fmt.Errorf("jobs: register worker %s: %w", workerID, err)
	}
	s.log.Warn("worker registration refused", "worker", workerID, "reason", reason)
	return "", err
}

// AuthenticateSession returns the worker a session token belongs to, or
// ErrSessionInvalid (also once the worker is terminated: its credentials are revoked).
func (s *Service) AuthenticateSession(ctx context.Context, token string) (string, error) {
	if token == "" || len(token) > MaxSecretLen {
		return "", ErrSessionInvalid
	}
	id, err := s.st.Credentials().WorkerForSession(ctx, hashSecret(token))
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrSessionInvalid
	}
	if err != nil {
		return "", fmt.Errorf("jobs: authenticate session: %w", err)
	}
	return id, nil
}

// Heartbeat records that the worker is alive (never moves backwards).
func (s *Service) Heartbeat(ctx context.Context, workerID string, at time.Time) error {
	if at.IsZero() {
		at = s.cfg.Now()
	}
	if err := s.st.Workers().Heartbeat(ctx, workerID, at); err != nil {
		return fmt.Errorf("jobs: heartbeat: %w", err)
	}
	return nil
}

// JobStarted records that the worker started the job (ASSIGNED → RUNNING). Repeats and
// late reports are no-ops; a job not assigned to workerID is ErrNotAssigned.
func (s *Service) JobStarted(ctx context.Context, workerID, jobID string, at time.Time) error {
	if err := checkID("job_id", jobID); err != nil {
		return err
	}
	_, err := s.dispatchOutcome(ctx, MarkJobRunning{JobID: jobID, WorkerID: workerID, At: at})
	if err != nil {
		return fmt.Errorf("jobs: job started: %w", err)
	}
	return nil
}

// errDuplicate rolls back the transaction of a repeated JobFinished.
var errDuplicate = errors.New("jobs: duplicate result")

// JobResult is what a worker reports when its job ended (domain.JobResult).
type JobResult = domain.JobResult

// JobFinished records the worker's result durably: in one transaction it marks the
// result as received (a key in the idempotency table) and signals the execution saga,
// which completes the job. When it returns nil the worker may consider the result
// acknowledged. A repeated result (after a reconnect, or a lost ack) is a no-op.
func (s *Service) JobFinished(ctx context.Context, workerID string, r JobResult) error {
	if err := checkID("job_id", r.JobID); err != nil {
		return err
	}
	jobID := r.JobID
	errText := r.Error
	if len(errText) > MaxErrorBytes {
		errText = errText[:MaxErrorBytes]
	}
	sig := finishedSignal{ExitCode: r.ExitCode, Error: errText, Cancelled: r.Cancelled}
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		j, err := s.st.Jobs().Get(ctx, jobID)
		if err != nil {
			return err
		}
		if j.WorkerID != workerID {
			return fmt.Errorf("%w: job %s, worker %s", ErrNotAssigned, jobID, workerID)
		}
		if j.State.IsTerminal() {
			return errDuplicate
		}
		key := fmt.Sprintf("job.finished/%s/%d", jobID, j.Attempt)
		if _, err := s.st.Idempotency().Get(ctx, key); err == nil {
			return errDuplicate
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		payload, err := json.Marshal(sig)
		if err != nil {
			return err
		}
		if err := s.st.Idempotency().Put(ctx, key, "job.finished", payload); err != nil {
			if errors.Is(err, store.ErrConflict) { // a concurrent copy won
				return errDuplicate
			}
			return err
		}
		if j.State == domain.JobCancelling { // cancel.go: the cancellation saga waits for it too
			if err := s.signalCancellation(ctx, jobID, SignalJobFinished, sig); err != nil {
				return err
			}
		}
		return s.signalExecution(ctx, jobID, SignalJobFinished, sig)
	})
	if errors.Is(err, errDuplicate) {
		s.log.Debug("duplicate job result ignored", "job", jobID, "worker", workerID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("jobs: job finished: %w", err)
	}
	return nil
}

// AppendLogs stores a batch of output lines of the worker's job jobID (each line's
// JobID is set here); lines already stored (same job and seq) are skipped, so a re-sent
// batch is harmless.
func (s *Service) AppendLogs(ctx context.Context, workerID, jobID string, lines []*store.LogLine) error {
	if err := checkID("job_id", jobID); err != nil {
		return err
	}
	if n := len(lines); n > MaxBatchLines {
		return fmt.Errorf("%w: lines has %d entries, limit %d (MaxBatchLines)", ErrInvalidInput, n, MaxBatchLines)
	}
	if len(lines) == 0 {
		return nil
	}
	for i, l := range lines {
		if l == nil {
			return fmt.Errorf("%w: lines[%d] is missing", ErrInvalidInput, i)
		}
		if l.Seq < 1 {
			return fmt.Errorf("%w: lines[%d].seq must be >= 1, got %d", ErrInvalidInput, i, l.Seq)
		}
		if len(l.Line) > MaxLogLineBytes {
			return fmt.Errorf("%w: lines[%d].line is %d bytes, limit %d (MaxLogLineBytes)",
				ErrInvalidInput, i, len(l.Line), MaxLogLineBytes)
		}
		l.JobID = jobID
	}
	w, err := s.st.Workers().Get(ctx, workerID)
	if err != nil {
		return fmt.Errorf("jobs: append logs: %w", err)
	}
	if w.JobID != jobID {
		return fmt.Errorf("%w: job %s, worker %s", ErrNotAssigned, jobID, workerID)
	}
	if _, err := s.st.Logs().Append(ctx, lines...); err != nil {
		return fmt.Errorf("jobs: append logs: %w", err)
	}
	return nil
}

// ReadLogs returns up to limit (0: 1000) stored lines of jobID with seq > afterSeq.
func (s *Service) ReadLogs(ctx context.Context, jobID string, afterSeq int64, limit int) ([]*store.LogLine, error) {
	lines, err := s.st.Logs().List(ctx, jobID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("jobs: read logs: %w", err)
	}
	return lines, nil
}

// PendingRun returns the job to (re)send to workerID when it connects: its job if that
// is ASSIGNED to it (not yet reported started), else nil. The agent ignores a RunJob
// for a job it already runs, so a duplicate is harmless.
func (s *Service) PendingRun(ctx context.Context, workerID string) (*domain.Job, error) {
	w, err := s.st.Workers().Get(ctx, workerID)
	if err != nil {
		return nil, fmt.Errorf("jobs: pending run: %w", err)
	}
	if w.JobID == "" || w.State.IsTerminal() {
		return nil, nil
	}
	j, err := s.st.Jobs().Get(ctx, w.JobID)
	if err != nil {
		return nil, fmt.Errorf("jobs: pending run: %w", err)
	}
	if j.State != domain.JobAssigned || j.WorkerID != workerID {
		return nil, nil
	}
	return j, nil
}

func (s *Service) dispatchOutcome(ctx context.Context, c command.Command) (Outcome, error) {
	res, err := s.d.DispatchAny(ctx, c)
	if err != nil {
		return Outcome{}, err
	}
	o, _ := res.(Outcome)
	return o, nil
}
