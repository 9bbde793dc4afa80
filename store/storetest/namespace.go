package storetest

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// namespaceLimits: SetLimit stores, replaces and (0) removes a limit; Usage lists the
// namespaces with a limit or jobs with their running and pending counts; the scheduler's
// headroom is the limit minus the jobs holding a worker; ClaimPendingExcept leaves out
// the jobs of the namespaces named.
func namespaceLimits(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	at := time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC)
	n := 0
	mk := func(ns string, state domain.JobState) string {
		n++
		id := "ns-job-" + string(rune('a'+n))
		must(t, s.Jobs().Create(ctx, &domain.Job{ID: id, State: state, CreatedAt: at.Add(time.Duration(n) * time.Second),
			Spec: domain.JobSpec{Command: []string{"true"}, Namespace: ns}}))
		return id
	}
	mk("team-a", domain.JobRunning)
	mk("team-a", domain.JobProvisioning)
	mk("team-a", domain.JobSucceeded)
	a1 := mk("team-a", domain.JobPending)
	b1 := mk("team-b", domain.JobPending)
	mk("team-b", domain.JobAssigned)
	d1 := mk("", domain.JobPending) // stored without a namespace: "default"

	must(t, s.Namespaces().SetLimit(ctx, "team-a", 5, at))
	must(t, s.Namespaces().SetLimit(ctx, "team-a", 2, at)) // replaces
	must(t, s.Namespaces().SetLimit(ctx, "team-c", 3, at)) // no jobs yet
	must(t, s.Namespaces().SetLimit(ctx, "team-d", 3, at))
	must(t, s.Namespaces().SetLimit(ctx, "team-d", 0, at)) // removed
	if err := s.Namespaces().SetLimit(ctx, "team-e", -1, at); err == nil {
		t.Fatal("SetLimit accepted a negative limit")
	}

	usage, err := s.Namespaces().Usage(ctx)
	must(t, err)
	want := []store.NamespaceUsage{
		{Name: "default", Pending: 1},
		{Name: "team-a", MaxRunning: 2, Running: 2, Pending: 1},
		{Name: "team-b", Running: 1, Pending: 1},
		{Name: "team-c", MaxRunning: 3},
	}
	if !reflect.DeepEqual(usage, want) {
		t.Fatalf("Usage = %+v\nwant    %+v", usage, want)
	}

	var head map[string]int
	var claimed []string
	must(t, s.InTx(ctx, func(ctx context.Context) error {
		if err := s.Scheduling().Lock(ctx); err != nil {
			return err
		}
		var err error
		if head, err = s.Scheduling().NamespaceHeadroom(ctx); err != nil {
			return err
		}
		jobs, err := s.Scheduling().ClaimPendingExcept(ctx, 10, []string{"team-a", "default"})
		for _, j := range jobs {
			claimed = append(claimed, j.ID)
		}
		return err
	}))
	if !reflect.DeepEqual(head, map[string]int{"team-a": 0, "team-c": 3}) {
		t.Fatalf("NamespaceHeadroom = %v, want team-a 0 and team-c 3", head)
	}
	if !reflect.DeepEqual(claimed, []string{b1}) {
		t.Fatalf("ClaimPendingExcept(team-a, default) = %v, want [%s]", claimed, b1)
	}
	claimed = nil
	must(t, s.InTx(ctx, func(ctx context.Context) error {
		jobs, err := s.Scheduling().ClaimPendingExcept(ctx, 10, nil)
		for _, j := range jobs {
			claimed = append(claimed, j.ID)
		}
		return err
	}))
	slices.Sort(claimed)
	if wantAll := []string{a1, b1, d1}; !reflect.DeepEqual(claimed, wantAll) {
		t.Fatalf("ClaimPendingExcept(nil) = %v, want %v", claimed, wantAll)
	}
}
