package outbox_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/outbox"
)

// record registers C on b with a handler that stores the command it gets in *got.
func record[C command.Command, R any](b *command.Bus, got *command.Command) {
	command.Register(b, command.HandlerFunc[C, R](func(_ context.Context, c C) (R, error) {
		*got = c
		var r R
		return r, nil
	}))
}

// jobCommandBus is a bus with every command type of package jobs, whose handlers only
// record the decoded command.
func jobCommandBus(got *command.Command) *command.Bus {
	b := command.NewBus()
	record[jobs.ValidateReservation, jobs.Outcome](b, got)
	record[jobs.CreateWorker, jobs.Outcome](b, got)
	record[jobs.DestroyWorker, jobs.Outcome](b, got)
	record[jobs.ReleaseWorker, jobs.Outcome](b, got)
	record[jobs.AssignWorker, jobs.Outcome](b, got)
	record[jobs.DispatchJob, jobs.Outcome](b, got)
	record[jobs.DeliverRun, jobs.Outcome](b, got)
	record[jobs.CompleteJob, jobs.Outcome](b, got)
	record[jobs.MarkJobFailed, jobs.Outcome](b, got)
	record[jobs.MarkJobRunning, jobs.Outcome](b, got)
	record[jobs.RetryProvisioning, jobs.Outcome](b, got)
	record[jobs.NotifyWorkerReady, jobs.Outcome](b, got)
	record[jobs.SendCancel, jobs.Outcome](b, got)
	record[jobs.FinishCancellation, jobs.Outcome](b, got)
	record[jobs.StartJobTimeout, jobs.Outcome](b, got)
	record[jobs.TerminateWorker, jobs.Outcome](b, got)
	record[jobs.StartRecovery, jobs.RecoveryOutcome](b, got)
	record[jobs.ReserveReplacement, jobs.RecoveryOutcome](b, got)
	record[jobs.TransferJob, jobs.RecoveryOutcome](b, got)
	record[jobs.AbandonJob, jobs.RecoveryOutcome](b, got)
	return b
}

// FuzzOutboxCommandDecode feeds outbox command rows (type, payload) to the relay's
// sink: an unknown type or an undecodable payload must be a Permanent error (dead
// letter, never a retry loop or a panic); a decoded command must be of the row's type
// and survive re-encoding unchanged.
func FuzzOutboxCommandDecode(f *testing.F) {
	var got command.Command
	bus := jobCommandBus(&got)
	types := bus.Types()
	f.Add(uint8(0), []byte(`{"job_id":"j1","worker_id":"w1","idempotency_key":"k"}`))
	f.Add(uint8(3), []byte(`{"job_id":"j1","attempt":2,"reason":"x"}`))
	f.Add(uint8(7), []byte(`{}`))
	f.Add(uint8(12), []byte(`null`))
	f.Add(uint8(200), []byte(`[1,2]`))
	f.Add(uint8(255), []byte(`{"job_id":1}`))
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		typ := "no.such.command"
		if int(which) < len(types) {
			typ = types[which]
		}
		got = nil
		err := outbox.BusSink{Bus: bus}.DispatchEncoded(context.Background(), typ, payload)
		if err != nil {
			if !outbox.IsPermanent(err) {
				t.Fatalf("%s %q: %v is not Permanent", typ, payload, err)
			}
			return
		}
		if got == nil || got.CommandType() != typ {
			t.Fatalf("%s %q: handler got %#v", typ, payload, got)
		}
		enc, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("%s: re-encode %#v: %v", typ, got, err)
		}
		again, err := bus.Decode(typ, enc)
		if err != nil {
			t.Fatalf("%s: decode the re-encoded %s: %v", typ, enc, err)
		}
		if !reflect.DeepEqual(again, got) {
			t.Fatalf("%s: re-encoding changed the command:\n%#v\n%#v", typ, got, again)
		}
	})
}
