package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/bench"
)

// maxPayloadText is the width of the payload column of `hodei saga show`.
const maxPayloadText = 80

func newSagaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "Inspect durable sagas",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newSagaShowCmd(), newSagaListCmd())
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
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Type     string          `json:"type"`
	Category string          `json:"category"`
	Step     string          `json:"step,omitempty"`
	Attempt  int             `json:"attempt,omitempty"`
	Codec    string          `json:"codec"`
	Payload  json.RawMessage `json:"payload"`
}

func newSagaShowCmd() *cobra.Command {
	var (
		f             adminFlags
		output, jobID string
		categories    []string
	)
	cmd := &cobra.Command{
		Use:   "show SAGA_ID | --job JOB_ID",
		Short: "Print a saga's state and its event history",
		Long: "Print a saga's row (type, version, state, current step) and its history " +
			"(seq, time, category, event type, step, short payload), read from the server's " +
			"admin API (AdminService.GetSagaHistory), so it works against `hodei dev` as well " +
			"as `hodei server`. -o json prints one JSON object with the full payloads. --job " +
			"prints every saga of a job (execution and provisioning sagas, recovery, timeout " +
			"and cancellation sagas, oldest first; -o json: an array). --category keeps only " +
			"events of those categories: lifecycle, step, compensation, timer, signal, incident.",
		Example: `  hodei saga show 5f0c…
  hodei saga show --job 0193… --category step,compensation
  HODEI_SERVER=http://10.0.0.5:7070 HODEI_ADMIN_TOKEN=… hodei saga show --job 0193… -o json`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if (jobID == "") == (len(args) == 0) {
				return errors.New("give either SAGA_ID or --job JOB_ID")
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			if jobID != "" {
				return showJobSagas(ctx, out, ac, c, jobID, categories, output == outputJSON)
			}
			v, err := loadSagaView(ctx, ac, c, args[0], categories)
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeJSON(out, v)
			}
			return printSagaView(out, v)
		},
	}
	f.define(cmd)
	outputFlag(cmd, &output)
	cmd.Flags().StringVar(&jobID, "job", "", "show every saga of this job instead of one saga")
	cmd.Flags().StringSliceVar(&categories, "category", nil,
		"only events of these categories (comma-separated or repeated): lifecycle, step, compensation, timer, signal, incident")
	return cmd
}

// loadSagaView reads saga id and its history (only the given categories, if any) from
// the admin API.
func loadSagaView(ctx context.Context, ac hodeiv1connect.AdminServiceClient, c *apiClient, id string, categories []string) (*sagaView, error) {
	res, err := ac.GetSagaHistory(ctx, connect.NewRequest(&hodeiv1.GetSagaHistoryRequest{SagaId: id, Categories: categories}))
	if err != nil {
		return nil, explainAdmin(c, err)
	}
	return sagaViewOf(res.Msg)
}

// sagaViewOf converts the API's answer into what the command prints.
func sagaViewOf(m *hodeiv1.GetSagaHistoryResponse) (*sagaView, error) {
	s := m.GetSaga()
	v := &sagaView{ID: s.GetId(), Type: s.GetType(), Version: int(m.GetVersion()), State: s.GetState(),
		CurrentStep: int(s.GetCurrentStep()), CurrentStepName: s.GetCurrentStepName(), LastSeq: m.GetLastSeq(),
		Error: s.GetError(), CreatedAt: s.GetCreatedAt().AsTime(), UpdatedAt: s.GetUpdatedAt().AsTime(),
		Events: make([]sagaEventView, 0, len(m.GetEvents()))}
	if m.GetRunnableAt() != nil {
		t := m.GetRunnableAt().AsTime()
		v.RunnableAt = &t
	}
	for _, ev := range m.GetEvents() {
		p := json.RawMessage(ev.GetPayload())
		if len(p) == 0 {
			p = json.RawMessage("{}")
		}
		if !json.Valid(p) {
			return nil, fmt.Errorf("saga %s event %d: the server sent a payload that is not JSON", v.ID, ev.GetSeq())
		}
		v.Events = append(v.Events, sagaEventView{Seq: ev.GetSeq(), Time: ev.GetTime().AsTime(), Type: ev.GetType(),
			Category: ev.GetCategory(), Step: ev.GetStep(), Attempt: int(ev.GetAttempt()), Codec: ev.GetCodec(), Payload: p})
	}
	return v, nil
}

// showJobSagas prints every saga of jobID with its history (`hodei saga show --job`).
func showJobSagas(ctx context.Context, w io.Writer, ac hodeiv1connect.AdminServiceClient, c *apiClient, jobID string, categories []string, asJSON bool) error {
	res, err := ac.ListJobSagas(ctx, connect.NewRequest(&hodeiv1.ListJobSagasRequest{JobId: jobID}))
	if err != nil {
		return explainAdmin(c, err)
	}
	if len(res.Msg.GetSagas()) == 0 {
		return fmt.Errorf("job %s has no sagas yet", jobID)
	}
	views := make([]*sagaView, 0, len(res.Msg.GetSagas()))
	for _, s := range res.Msg.GetSagas() {
		v, err := loadSagaView(ctx, ac, c, s.GetId(), categories)
		if err != nil {
			return err
		}
		views = append(views, v)
	}
	if asJSON {
		return writeJSON(w, views)
	}
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := printSagaView(w, v); err != nil {
			return err
		}
	}
	return nil
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
	fmt.Fprintln(tw, "SEQ\tTIME\tCATEGORY\tEVENT\tSTEP\tPAYLOAD")
	for _, ev := range v.Events {
		p := string(ev.Payload)
		if p == "{}" {
			p = ""
		}
		p = strings.NewReplacer("\n", " ", "\t", " ").Replace(p)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Format("2006-01-02T15:04:05.000Z07:00"),
			ev.Category, ev.Type, ev.Step, shorten(p, maxPayloadText))
	}
	return tw.Flush()
}

func newBenchSagasCmd() *cobra.Command {
	var (
		dbURL, output, cpuProfile string
		cfg                       bench.SagasConfig
		traceSink                 bool
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
			var stopSink func() int64
			if traceSink {
				var err error
				if stopSink, err = startTraceSink(cmd.Context(), slog.New(slog.DiscardHandler)); err != nil {
					return err
				}
			}
			res, err := bench.RunSagas(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if stopSink != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "trace sink: %d spans received\n", stopSink())
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
	f.BoolVar(&cfg.AllowDataLoss, "i-know-this-deletes-data", false, "run even on a database that holds jobs or outbox rows (the benchmark truncates the saga tables)")
	f.IntVar(&cfg.Steps, "steps", 3, "no-op steps per saga")
	f.IntVar(&cfg.Runners, "runners", 2, "saga engines (replicas) running the sagas")
	f.IntVar(&cfg.Concurrency, "concurrency", 16, "sagas each runner advances at once")
	f.IntVar(&cfg.BatchSize, "batch-size", 64, "sagas claimed per poll")
	f.DurationVar(&cfg.PollInterval, "poll", 5*time.Millisecond, "runners' database poll interval")
	f.BoolVar(&cfg.Wake, "wake", false, "also wake runners on each start (in-process waker)")
	f.IntVar(&cfg.Starters, "starters", 8, "goroutines starting sagas")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	traceSinkFlag(cmd, &traceSink)
	return cmd
}
