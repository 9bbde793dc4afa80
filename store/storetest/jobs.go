package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

func sampleSpec() domain.JobSpec {
	return domain.JobSpec{
		Name:        "build",
		Command:     []string{"make", "-j2", "all"},
		Env:         map[string]string{"GOFLAGS": "-mod=mod", "CI": "1"},
		WorkingDir:  "/src",
		Resources:   domain.Resources{CPUMillis: 1500, MemoryBytes: 512 << 20},
		Labels:      map[string]string{"team": "core", "tier": "gold"},
		Timeout:     90 * time.Second,
		MaxAttempts: 3,
		Priority:    7,
	}
}

func testJobs(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("CreateGet", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		exit := 3
		j := &domain.Job{ID: "job-1", Spec: sampleSpec(), State: domain.JobPending, Attempt: 1,
			ExitCode: &exit, LastError: "x", Notes: "n"}
		must(t, s.Jobs().Create(ctx, j))
		if j.CreatedAt.IsZero() || j.UpdatedAt.IsZero() {
			t.Fatalf("Create did not set timestamps: %+v", j)
		}
		got, err := s.Jobs().Get(ctx, "job-1")
		must(t, err)
		if !reflect.DeepEqual(got.Spec, j.Spec) {
			t.Fatalf("spec = %+v, want %+v", got.Spec, j.Spec)
		}
		if got.State != domain.JobPending || got.Attempt != 1 || got.ExitCode == nil || *got.ExitCode != 3 ||
			got.LastError != "x" || got.Notes != "n" {
			t.Fatalf("got %+v", got)
		}
		if !got.CreatedAt.Equal(j.CreatedAt) || !got.UpdatedAt.Equal(j.UpdatedAt) {
			t.Fatalf("timestamps %v/%v, want %v/%v", got.CreatedAt, got.UpdatedAt, j.CreatedAt, j.UpdatedAt)
		}
		if !got.StartedAt.IsZero() || !got.FinishedAt.IsZero() {
			t.Fatalf("started/finished set on a new job: %v %v", got.StartedAt, got.FinishedAt)
		}
		wantErr(t, s.Jobs().Create(ctx, &domain.Job{ID: "job-1", Spec: sampleSpec()}), store.ErrConflict)
		_, err = s.Jobs().Get(ctx, "nope")
		wantErr(t, err, store.ErrNotFound)

		auto := &domain.Job{Spec: sampleSpec()}
		must(t, s.Jobs().Create(ctx, auto))
		if auto.ID == "" || auto.State != domain.JobPending {
			t.Fatalf("Create with empty ID/state gave ID %q state %q", auto.ID, auto.State)
		}
	})

	t.Run("Lifecycle", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		must(t, s.Jobs().Create(ctx, &domain.Job{ID: "j", Spec: sampleSpec()}))
		base := time.Now().UTC().Truncate(time.Microsecond)
		steps := []struct {
			to     domain.JobState
			at     time.Time
			mutate func(*domain.Job)
		}{
			{domain.JobProvisioning, base.Add(1 * time.Second), nil},
			{domain.JobAssigned, base.Add(2 * time.Second), func(j *domain.Job) { j.WorkerID = "w-1"; j.Attempt++ }},
			{domain.JobRunning, base.Add(3 * time.Second), nil},
			{domain.JobSucceeded, base.Add(4 * time.Second), func(j *domain.Job) { z := 0; j.ExitCode = &z }},
		}
		for _, st := range steps {
			j, err := s.Jobs().UpdateState(ctx, "j", st.to, st.at, st.mutate)
			must(t, err)
			if j.State != st.to || !j.UpdatedAt.Equal(st.at) {
				t.Fatalf("returned state %s updated %v, want %s at %v", j.State, j.UpdatedAt, st.to, st.at)
			}
		}
		got, err := s.Jobs().Get(ctx, "j")
		must(t, err)
		if got.State != domain.JobSucceeded || got.WorkerID != "w-1" || got.Attempt != 1 ||
			got.ExitCode == nil || *got.ExitCode != 0 {
			t.Fatalf("after life cycle: %+v", got)
		}
		if !got.StartedAt.Equal(steps[2].at) || !got.FinishedAt.Equal(steps[3].at) || !got.UpdatedAt.Equal(steps[3].at) {
			t.Fatalf("started %v finished %v updated %v, want %v %v %v", got.StartedAt, got.FinishedAt,
				got.UpdatedAt, steps[2].at, steps[3].at, steps[3].at)
		}
		_, err = s.Jobs().UpdateState(ctx, "missing", domain.JobProvisioning, time.Now(), nil)
		wantErr(t, err, store.ErrNotFound)
	})

	// The driver writes what (*domain.Job).Transition computed from the caller's time,
	// not its own clock: a time far from now comes back exactly (in UTC), for
	// UpdatedAt, StartedAt and FinishedAt, in the returned job and in the stored row. A
	// zero time is refused and writes nothing.
	t.Run("StoresWhatTheDomainComputed", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		must(t, s.Jobs().Create(ctx, &domain.Job{ID: "j", Spec: sampleSpec(), State: domain.JobAssigned}))
		created, err := s.Jobs().Get(ctx, "j")
		must(t, err)
		zone := time.FixedZone("UTC+5", 5*3600)
		tRun := time.Date(2001, 2, 3, 4, 5, 6, 789000, zone) // before CreatedAt: the caller's clock rules
		tEnd := tRun.Add(90 * time.Minute)

		_, err = s.Jobs().UpdateState(ctx, "j", domain.JobRunning, time.Time{}, func(j *domain.Job) { j.Notes = "zero" })
		if err == nil {
			t.Fatal("UpdateState at the zero time succeeded")
		}
		if got, err := s.Jobs().Get(ctx, "j"); err != nil || !reflect.DeepEqual(got, created) {
			t.Fatalf("refused UpdateState wrote: %+v (err %v), want %+v", got, err, created)
		}

		want := *created
		must(t, want.Transition(domain.JobRunning, tRun, nil)) // what the domain computes
		ret, err := s.Jobs().UpdateState(ctx, "j", domain.JobRunning, tRun, nil)
		must(t, err)
		got, err := s.Jobs().Get(ctx, "j")
		must(t, err)
		for name, j := range map[string]*domain.Job{"returned": ret, "stored": got} {
			if !j.UpdatedAt.Equal(want.UpdatedAt) || !j.StartedAt.Equal(tRun) || !j.FinishedAt.IsZero() ||
				!j.CreatedAt.Equal(created.CreatedAt) || j.UpdatedAt.Location() != time.UTC {
				t.Fatalf("%s after RUNNING at %v: updated %v started %v finished %v created %v", name, tRun,
					j.UpdatedAt, j.StartedAt, j.FinishedAt, j.CreatedAt)
			}
		}
		if !reflect.DeepEqual(ret, got) {
			t.Fatalf("returned %+v, stored %+v", ret, got)
		}

		// mutate's start time (a worker's report) is kept on the next move; the
		// terminal move stamps FinishedAt with the caller's time.
		reported := tRun.Add(-time.Second).UTC()
		_, err = s.Jobs().UpdateState(ctx, "j", domain.JobAssigned, tRun.Add(time.Minute), func(j *domain.Job) { j.StartedAt = reported })
		must(t, err)
		_, err = s.Jobs().UpdateState(ctx, "j", domain.JobRunning, tRun.Add(2*time.Minute), nil)
		must(t, err)
		ret, err = s.Jobs().UpdateState(ctx, "j", domain.JobFailed, tEnd, func(j *domain.Job) { j.LastError = "boom" })
		must(t, err)
		got, err = s.Jobs().Get(ctx, "j")
		must(t, err)
		if !reflect.DeepEqual(ret, got) {
			t.Fatalf("returned %+v, stored %+v", ret, got)
		}
		if !got.StartedAt.Equal(reported) || !got.FinishedAt.Equal(tEnd) || !got.UpdatedAt.Equal(tEnd) ||
			got.State != domain.JobFailed || got.LastError != "boom" {
			t.Fatalf("after FAILED at %v: %+v", tEnd, got)
		}
	})

	t.Run("EveryTransition", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		for _, from := range domain.AllJobStates() {
			for _, to := range domain.AllJobStates() {
				id := fmt.Sprintf("%s-%s", from, to)
				must(t, s.Jobs().Create(ctx, &domain.Job{ID: id, Spec: sampleSpec(), State: from, Notes: "before"}))
				j, err := s.Jobs().UpdateState(ctx, id, to, time.Now(), func(j *domain.Job) {
					j.Notes = "after"
					j.State = domain.JobFailed // mutate may not change the state
					j.ID = "other"             // nor the ID
				})
				got, gerr := s.Jobs().Get(ctx, id)
				must(t, gerr)
				if domain.CheckJobTransition(from, to) == nil {
					if err != nil {
						t.Fatalf("%s → %s: %v", from, to, err)
					}
					if j.State != to || got.State != to || got.Notes != "after" || got.ID != id {
						t.Fatalf("%s → %s: returned %s, stored %s notes %q", from, to, j.State, got.State, got.Notes)
					}
					continue
				}
				var te *domain.TransitionError
				if !errors.As(err, &te) || !errors.Is(err, domain.ErrIllegalTransition) {
					t.Fatalf("%s → %s: error %v, want *domain.TransitionError", from, to, err)
				}
				if j != nil || got.State != from || got.Notes != "before" || !got.UpdatedAt.Equal(got.CreatedAt) {
					t.Fatalf("%s → %s refused but wrote: state %s notes %q", from, to, got.State, got.Notes)
				}
			}
		}
	})

	t.Run("ListPagination", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		var want []string // newest first
		for i := range 23 {
			created := base.Add(time.Duration(i/2) * time.Second) // pairs share created_at
			id := fmt.Sprintf("job-%02d", i)
			must(t, s.Jobs().Create(ctx, &domain.Job{ID: id, Spec: sampleSpec(), CreatedAt: created}))
			want = append([]string{id}, want...)
		}
		var got []string
		token := ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
			jobs, next, err := s.Jobs().List(ctx, store.JobFilter{PageSize: 5, PageToken: token})
			must(t, err)
			if len(jobs) > 5 {
				t.Fatalf("page of %d jobs, PageSize 5", len(jobs))
			}
			for _, j := range jobs {
				got = append(got, j.ID)
			}
			if next == "" {
				break
			}
			token = next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("paged ids\n got %v\nwant %v", got, want)
		}
		all, next, err := s.Jobs().List(ctx, store.JobFilter{})
		must(t, err)
		if len(all) != 23 || next != "" {
			t.Fatalf("default page: %d jobs, next %q", len(all), next)
		}
		_, _, err = s.Jobs().List(ctx, store.JobFilter{PageToken: "garbage!"})
		wantErr(t, err, store.ErrInvalidPageToken)
		_, _, err = s.Jobs().List(ctx, store.JobFilter{PageSize: -1})
		if err == nil {
			t.Fatal("negative PageSize accepted")
		}
	})

	t.Run("ListFilters", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		mk := func(id string, st domain.JobState, labels map[string]string) {
			sp := sampleSpec()
			sp.Labels = labels
			must(t, s.Jobs().Create(ctx, &domain.Job{ID: id, Spec: sp, State: st}))
		}
		mk("a", domain.JobPending, map[string]string{"team": "core", "env": "prod"})
		mk("b", domain.JobRunning, map[string]string{"team": "core", "env": "dev"})
		mk("c", domain.JobFailed, map[string]string{"team": "web", "env": "prod"})
		mk("d", domain.JobRunning, nil)
		ids := func(f store.JobFilter) []string {
			t.Helper()
			jobs, _, err := s.Jobs().List(ctx, f)
			must(t, err)
			var out []string
			for _, j := range jobs {
				out = append(out, j.ID)
			}
			slices.Sort(out)
			return out
		}
		cases := []struct {
			f    store.JobFilter
			want []string
		}{
			{store.JobFilter{States: []domain.JobState{domain.JobRunning}}, []string{"b", "d"}},
			{store.JobFilter{States: []domain.JobState{domain.JobPending, domain.JobFailed}}, []string{"a", "c"}},
			{store.JobFilter{Labels: map[string]string{"team": "core"}}, []string{"a", "b"}},
			{store.JobFilter{Labels: map[string]string{"team": "core", "env": "prod"}}, []string{"a"}},
			{store.JobFilter{Labels: map[string]string{"env": "prod"}, States: []domain.JobState{domain.JobFailed}}, []string{"c"}},
			{store.JobFilter{Labels: map[string]string{"team": "none"}}, nil},
		}
		for _, c := range cases {
			if got := ids(c.f); !slices.Equal(got, c.want) {
				t.Errorf("filter %+v: got %v, want %v", c.f, got, c.want)
			}
		}
		// Labels follow the spec through an update.
		_, err := s.Jobs().UpdateState(ctx, "d", domain.JobSucceeded, time.Now(), func(j *domain.Job) {
			j.Spec.Labels = map[string]string{"team": "core", "env": "qa"}
		})
		must(t, err)
		if got := ids(store.JobFilter{Labels: map[string]string{"team": "core"}}); !slices.Equal(got, []string{"a", "b", "d"}) {
			t.Errorf("after relabel: %v", got)
		}
	})

	t.Run("UpdateStateJoinsTx", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		must(t, s.Jobs().Create(ctx, &domain.Job{ID: "j", Spec: sampleSpec()}))
		err := s.InTx(ctx, func(ctx context.Context) error {
			if _, err := s.Jobs().UpdateState(ctx, "j", domain.JobProvisioning, time.Now(), nil); err != nil {
				return err
			}
			return errBoom
		})
		wantErr(t, err, errBoom)
		got, err := s.Jobs().Get(ctx, "j")
		must(t, err)
		if got.State != domain.JobPending {
			t.Fatalf("rolled-back UpdateState left state %s", got.State)
		}
	})
}
