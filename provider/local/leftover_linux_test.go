package local

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"
)

// leftInSession finds a process left in a worker's session, in a process group of its
// own, after the session's leader exited: on its short path (a worker that just
// started) and on the full scan (one that lived long).
func TestLeftInSessionFindsOrphanInOtherGroup(t *testing.T) {
	p := newProvider(t, t.TempDir(), "term-exits", nil)
	ctx := context.Background()
	if err := p.Create(ctx, spec("w1")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Destroy(ctx, "w1") })
	rec, err := p.readRecord("w1")
	if err != nil {
		t.Fatal(err)
	}
	members := waitMembers(t, rec.PID, 2) // the fake agent and its job
	job := members[0]
	if job == rec.PID {
		job = members[1]
	}
	if st, err := readStat(job); err != nil || st.pgrp == rec.PID {
		t.Fatalf("job %d: %+v, %v; want a process group of its own", job, st, err)
	}
	_ = syscall.Kill(rec.PID, syscall.SIGTERM) // the leader only: it exits, the job stays
	waitMembers(t, rec.PID, 1)
	for _, r := range []record{
		{WorkerID: "w1", PID: rec.PID, StartedAt: time.Now()},                 // short path
		{WorkerID: "w1", PID: rec.PID, StartedAt: time.Now().Add(-time.Hour)}, // full scan
	} {
		if got := leftInSession(r); !slices.Equal(got, []int{job}) {
			t.Errorf("leftInSession (started %s ago) = %v, want [%d]", time.Since(r.StartedAt).Round(time.Second), got, job)
		}
	}
}
