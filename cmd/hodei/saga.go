package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/internal/bench"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// maxPayloadText is the width of the payload column of `hodei saga show`.
const maxPayloadText = 80

func newSagaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "Inspect durable sagas",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newSagaShowCmd())
	return cmd
}

// sagaView is what `hodei saga show -o json` prints.
type sagaView struct {
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	Version         int             `json:"version"`
	State           string          `json:"state"`
	CurrentStep     int             `json:"current_step"`
	CurrentStepName string          `json:"current_step_name,omitempty"`
	LastSeq         int64           `json:"last_seq"`
	Error           string          `json:"error,omitempty"`
	RunnableAt      *time.Time      `json:"runnable_at,omitempty"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
	Events          []sagaEventView `json:"events"`
}

type sagaEventView struct {
	Seq     int64           `json:"seq"`
	Time    time.Time       `json:"time"`
	Type    string          `json:"type"`
	Step    string          `json:"step,omitempty"`
	Attempt int             `json:"attempt,omitempty"`
	Codec   string          `json:"codec"`
	Payload json.RawMessage `json:"payload"`
}

func newSagaShowCmd() *cobra.Command {
	var dbURL, output, jobID string
	cmd := &cobra.Command{
		Use:   "show SAGA_ID | --job JOB_ID",
		Short: "Print a saga's state and its event history",
		Long: "Print a saga's row (type, version, state, current step) and its history " +
			"(seq, time, event type, step, short payload). -o json prints one JSON object " +
			"with the full payloads. --job prints every saga of a job (execution and " +
			"provisioning sagas, recovery, timeout and cancellation sagas, oldest first; -o json: an array).",
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := requireFlags(cmd, "database-url"); err != nil {
				return err
			}
			if (jobID == "") == (len(args) == 0) {
				return errors.New("give either SAGA_ID or --job JOB_ID")
			}
			if jobID != "" {
				return showJobSagas(cmd.Context(), cmd.OutOrStdout(), dbURL, jobID, output == outputJSON) // admin.go
			}
			v, err := loadSagaView(cmd.Context(), dbURL, args[0])
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			return printSagaView(cmd.OutOrStdout(), v)
		},
	}
	databaseURLFlag(cmd, &dbURL)
	outputFlag(cmd, &output)
	cmd.Flags().StringVar(&jobID, "job", "", "show every saga of this job instead of one saga")
	return cmd
}

func loadSagaView(ctx context.Context, dbURL, id string) (*sagaView, error) {
	st, err := postgres.Open(ctx, dbURL, postgres.WithMaxConns(2))
	if err != nil {
		return nil, fmt.Errorf("open database: %w (check --database-url and that PostgreSQL is up)", err)
	}
	defer st.Close()
	// A read-only engine: no steps are registered and nothing is dispatched; it is used
	// for its codecs, which decode every event whatever codec wrote it.
	eng, err := saga.New(st, saga.NewRegistry(), command.NewBus(), saga.Config{RunnerID: "hodei-saga-show"})
	if err != nil {
		return nil, err
	}
	info, err := eng.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no saga with id %q in this database: check the id (and --database-url)", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read saga %s: %w (has the database been migrated? run `hodei migrate`)", id, err)
	}
	hist, err := eng.History(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read history of saga %s: %w", id, err)
	}
	v := &sagaView{ID: info.ID, Type: info.Type, Version: info.Version, State: string(info.State),
		CurrentStep: info.CurrentStep, LastSeq: info.LastSeq, Error: info.Error,
		CreatedAt: info.CreatedAt.UTC(), UpdatedAt: info.UpdatedAt.UTC(), Events: []sagaEventView{}}
	if !info.RunnableAt.IsZero() {
		t := info.RunnableAt.UTC()
		v.RunnableAt = &t
	}
	for _, ev := range hist {
		p, err := payloadJSON(&ev.Data)
		if err != nil {
			return nil, fmt.Errorf("saga %s event %d: %w", id, ev.Seq, err)
		}
		v.Events = append(v.Events, sagaEventView{Seq: ev.Seq, Time: ev.Time.UTC(), Type: ev.Type,
			Step: ev.Step, Attempt: ev.Attempt, Codec: ev.Codec, Payload: p})
		if ev.Type == saga.EventStepScheduled && ev.Data.Index == info.CurrentStep {
			v.CurrentStepName = ev.Step
		}
	}
	return v, nil
}

// payloadJSON renders decoded event data as JSON, with the step output (or signal
// payload) inline when it is JSON.
func payloadJSON(d *saga.EventData) (json.RawMessage, error) {
	m := map[string]any{}
	if len(d.Output) > 0 {
		if json.Valid(d.Output) {
			m["output"] = json.RawMessage(d.Output)
		} else {
			m["output"] = d.Output // base64
		}
	}
	if d.Error != "" {
		m["error"] = d.Error
	}
	if d.Final {
		m["final"] = true
	}
	if d.Name != "" {
		m["name"] = d.Name
	}
	if d.TimerID != "" {
		m["timer_id"] = d.TimerID
	}
	if !d.FireAt.IsZero() {
		m["fire_at"] = d.FireAt.UTC()
	}
	if !d.NotBefore.IsZero() {
		m["not_before"] = d.NotBefore.UTC()
	}
	if d.Seq != 0 {
		m["seq"] = d.Seq
	}
	if d.Index != 0 {
		m["index"] = d.Index
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return b, nil
}

// shorten cuts s to at most n runes, marking the cut with "…".
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func printSagaView(w io.Writer, v *sagaView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	step := fmt.Sprint(v.CurrentStep)
	if v.CurrentStepName != "" {
		step += " (" + v.CurrentStepName + ")"
	}
	fmt.Fprintf(tw, "Saga:\t%s\n", v.ID)
	fmt.Fprintf(tw, "Type:\t%s v%d\n", v.Type, v.Version)
	fmt.Fprintf(tw, "State:\t%s\n", v.State)
	fmt.Fprintf(tw, "Current step:\t%s\n", step)
	if v.Error != "" {
		fmt.Fprintf(tw, "Error:\t%s\n", v.Error)
	}
	fmt.Fprintf(tw, "Created:\t%s\n", v.CreatedAt.Format(time.RFC3339Nano))
	fmt.Fprintf(tw, "Updated:\t%s\n", v.UpdatedAt.Format(time.RFC3339Nano))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tSTEP\tPAYLOAD")
	for _, ev := range v.Events {
		p := string(ev.Payload)
		if p == "{}" {
			p = ""
		}
		p = strings.NewReplacer("\n", " ", "\t", " ").Replace(p)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Format("2006-01-02T15:04:05.000Z07:00"),
			ev.Type, ev.Step, shorten(p, maxPayloadText))
	}
	return tw.Flush()
}

func newBenchSagasCmd() *cobra.Command {
	var (
		dbURL, output, cpuProfile string
		cfg                       bench.SagasConfig
	)
	cmd := &cobra.Command{
		Use:   "sagas",
		Short: "Measure saga throughput and event-append latency on PostgreSQL",
		Long: "Start --sagas sagas of --steps steps (each step dispatches a no-op command " +
			"through a command bus) and run them to completion with --runners engines. " +
			"Reports sagas per second (start of the first to completion of the last) and " +
			"the latency of the saga store's Append (p50/p99). The database is migrated and " +
			"its saga tables are TRUNCATED: use a database of its own.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := requireFlags(cmd, "database-url"); err != nil {
				return err
			}
			cfg.DatabaseURL = dbURL
			if output == outputText {
				cfg.Log = cmd.ErrOrStderr()
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			res, err := bench.RunSagas(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeJSON(out, res)
			}
			fmt.Fprintf(out, "throughput: %d sagas of %d steps, %d runners: %.0f sagas/s (%.2fs; all started after %.2fs)\n",
				res.Sagas, res.Steps, res.Runners, res.ThroughputPerS, res.Seconds, res.StartSeconds)
			fmt.Fprintf(out, "append:     %d appends: p50 %.3f ms, p99 %.3f ms, max %.3f ms; %d conflicts\n",
				res.Appends, res.AppendP50Ms, res.AppendP99Ms, res.AppendMaxMs, res.Conflicts)
			return nil
		},
	}
	databaseURLFlag(cmd, &dbURL)
	outputFlag(cmd, &output)
	f := cmd.Flags()
	f.IntVar(&cfg.Sagas, "sagas", 2000, "sagas to start and run")
	f.IntVar(&cfg.Steps, "steps", 3, "no-op steps per saga")
	f.IntVar(&cfg.Runners, "runners", 2, "saga engines (replicas) running the sagas")
	f.IntVar(&cfg.Concurrency, "concurrency", 16, "sagas each runner advances at once")
	f.IntVar(&cfg.BatchSize, "batch-size", 64, "sagas claimed per poll")
	f.DurationVar(&cfg.PollInterval, "poll", 5*time.Millisecond, "runners' database poll interval")
	f.BoolVar(&cfg.Wake, "wake", false, "also wake runners on each start (in-process waker)")
	f.IntVar(&cfg.Starters, "starters", 8, "goroutines starting sagas")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	return cmd
}
