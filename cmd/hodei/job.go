package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/internal/backoff"
	"github.com/hodei-jobs/hodei/telemetry"
)

// Exit codes of `hodei job run` when the job did not exit by itself. A job that exited
// passes its own code on.
const (
	exitJobFailed    = 1   // FAILED without an exit code (could not start, killed, lost)
	exitJobTimedOut  = 124 // TIMED_OUT, like timeout(1)
	exitJobCancelled = 130 // CANCELLED
	exitJobReview    = 1   // MANUAL_INTERVENTION_REQUIRED
	exitInterrupted  = 130 // `job run` interrupted (the job keeps running)
)

// How long a broken stream (server restarting, network) is reopened before giving up.
const streamRetryFor = 2 * time.Minute

func newJobCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Submit, run, inspect and cancel jobs on a Hodei server",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(
		newJobSubmitCmd(),
		newJobRunCmd(),
		newJobGetCmd(),
		newJobExplainCmd(),
		newJobListCmd(),
		newJobLogsCmd(),
		newJobCancelCmd(),
	)
	return cmd
}

// specFlags are the flags that describe a job, shared by `job submit` and `job run`.
type specFlags struct {
	name        string
	timeout     time.Duration
	env         []string
	labels      []string
	maxAttempts int
	priority    int
	script      string
	interpreter string
	namespace   string
	image       string
	provider    string
	selector    []string
	cpu         string
	memory      string
	pull        string
	secrets     []string
}

func (f *specFlags) define(cmd *cobra.Command) {
	fs := cmd.Flags()
	// Flags end at the first argument: `hodei job run ls -la` runs `ls -la`.
	fs.SetInterspersed(false)
	fs.StringVar(&f.name, "name", "", "name of the job (free text, shown in listings)")
	fs.DurationVar(&f.timeout, "timeout", 0, "end the job as TIMED_OUT after this long, e.g. 90s or 10m (0: no timeout)")
	fs.StringArrayVar(&f.env, "env", nil, "environment variable K=V of the job (repeatable)")
	fs.StringArrayVar(&f.labels, "label", nil, "label K=V of the job (repeatable)")
	fs.IntVar(&f.maxAttempts, "max-attempts", 0, "attempts before the job fails (0: the server's default)")
	fs.IntVar(&f.priority, "priority", 0, "higher starts first when workers are short")
	fs.StringVar(&f.script, "script", "", "run this script file (- for standard input) instead of a command")
	fs.StringVar(&f.interpreter, "interpreter", "", "absolute path of the script's interpreter (default /bin/sh)")
	fs.StringVar(&f.namespace, "namespace", "", "namespace of the job (default: the token's only namespace, else \"default\")")
	fs.StringVar(&f.image, "image", "", "container image the job runs in (needs a container provider, e.g. docker)")
	fs.StringVar(&f.provider, "provider", "", "run on this provider (a name given to the server's --provider)")
	fs.StringArrayVar(&f.selector, "selector", nil, "run on a provider carrying label K=V (repeatable; all must match)")
	fs.StringVar(&f.cpu, "cpu", "", "cores for the job, a decimal (0.5) or millicores (500m)")
	fs.StringVar(&f.memory, "memory", "", "memory for the job: bytes or a quantity such as 256Mi, 1Gi, 512Ki")
	fs.StringVar(&f.pull, "pull", "", "image pull policy: never, if-not-present (default) or always")
	fs.StringArrayVar(&f.secrets, "secret", nil, "secret of the job's namespace in its environment: NAME (variable NAME) or NAME=ENV (repeatable; see hodei secret)")
}

// spec builds the job spec from the flags and the command line after them. It checks
// what the flags alone can get wrong, naming the flag; everything else is the server's
// to validate (it names the field).
func (f *specFlags) spec(args []string, stdin io.Reader) (*hodeiv1.JobSpec, error) {
	if f.timeout < 0 {
		return nil, fmt.Errorf("--timeout: must not be negative (0 means no timeout), got %s", f.timeout)
	}
	if f.maxAttempts < 0 {
		return nil, fmt.Errorf("--max-attempts: must not be negative (0 means the server's default), got %d", f.maxAttempts)
	}
	env, err := parseKV("--env", f.env)
	if err != nil {
		return nil, err
	}
	labels, err := parseKV("--label", f.labels)
	if err != nil {
		return nil, err
	}
	selector, err := parseKV("--selector", f.selector)
	if err != nil {
		return nil, err
	}
	refs, err := parseSecretRefs(f.secrets)
	if err != nil {
		return nil, err
	}
	spec := &hodeiv1.JobSpec{
		Secrets:     refs,
		Name:        f.name,
		Env:         env,
		Labels:      labels,
		MaxAttempts: int32(min(f.maxAttempts, 1<<31-1)),
		Priority:    int32(max(min(f.priority, 1<<31-1), -1<<31)),
		Namespace:   f.namespace,
		Image:       f.image,
		Provider:    f.provider,
		Selector:    selector,
	}
	if f.pull != "" {
		p, err := domain.ParsePullPolicy(f.pull)
		if err != nil {
			return nil, fmt.Errorf("--pull: %w", err)
		}
		if f.image == "" {
			return nil, errors.New("--pull: only meaningful with --image")
		}
		spec.Pull = string(p)
	}
	if f.cpu != "" || f.memory != "" {
		spec.Resources = &hodeiv1.Resources{}
		if f.cpu != "" {
			m, err := domain.ParseCPU(f.cpu)
			if err != nil {
				return nil, fmt.Errorf("--cpu: %w", err)
			}
			spec.Resources.CpuMillis = m
		}
		if f.memory != "" {
			b, err := domain.ParseMemory(f.memory)
			if err != nil {
				return nil, fmt.Errorf("--memory: %w", err)
			}
			spec.Resources.MemoryBytes = b
		}
	}
	if f.timeout > 0 {
		spec.Timeout = durationpb.New(f.timeout)
	}
	switch {
	case f.script != "":
		if len(args) > 0 {
			return nil, fmt.Errorf("--script: give either a script or a command after --, not both (got command %q)", strings.Join(args, " "))
		}
		content, err := readScript(f.script, stdin)
		if err != nil {
			return nil, err
		}
		spec.Script = &hodeiv1.Script{Content: content, Interpreter: f.interpreter}
	case f.interpreter != "":
		return nil, errors.New("--interpreter: only meaningful with --script FILE")
	case len(args) == 0:
		return nil, errors.New("command: missing; give it after -- (e.g. hodei job run -- echo hello) or use --script FILE")
	default:
		spec.Command = slices.Clone(args)
	}
	return spec, nil
}

// readScript reads the --script file (or standard input for "-").
func readScript(path string, stdin io.Reader) (string, error) {
	var (
		b   []byte
		err error
	)
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, domain.MaxScriptBytes+1))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("--script: %w", err)
	}
	return string(b), nil
}

// parseKV parses K=V values of the flag named flag into a map (a later K wins).
func parseKV(flag string, vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(vals))
	for _, kv := range vals {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%s: want K=V, got %q (no '=')", flag, kv)
		}
		if k == "" {
			return nil, fmt.Errorf("%s: want K=V, got %q (empty name)", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

func newJobSubmitCmd() *cobra.Command {
	var (
		server string
		sf     specFlags
	)
	cmd := &cobra.Command{
		Use:   "submit [flags] -- CMD [ARGS...]",
		Short: "Submit a job and print its id",
		Long: "Submit a job that runs CMD with ARGS (or the --script file) on a worker provisioned " +
			"for it, and print the job's id alone on a line. Use `hodei job run` to wait for it.",
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := sf.spec(args, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := newAPIClient(cmd, server)
			if err != nil {
				return err
			}
			job, err := c.submit(cmd.Context(), spec)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), job.GetId())
			return nil
		},
	}
	serverFlag(cmd, &server)
	sf.define(cmd)
	return cmd
}

func newJobRunCmd() *cobra.Command {
	var (
		server  string
		sf      specFlags
		verbose bool
		traceID string
	)
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARGS...]",
		Short: "Submit a job, stream its output and exit with its exit code",
		Long: "Submit a job like `hodei job submit`, print its standard output and error as the " +
			"worker streams them, wait for it to end and exit with the job's exit code. A job " +
			"that ends without one exits non-zero with the reason on standard error: FAILED " +
			"1, TIMED_OUT 124, CANCELLED 130. Interrupting `job run` leaves the job running.",
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := sf.spec(args, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := newAPIClient(cmd, server)
			if err != nil {
				return err
			}
			if verbose {
				tp, tid, err := telemetry.NewTraceParent()
				if err != nil {
					return err
				}
				c.traceParent, traceID = tp, tid
			}
			job, err := c.submit(cmd.Context(), spec)
			if err != nil {
				return err
			}
			if verbose {
				fmt.Fprintf(cmd.ErrOrStderr(), "job %s, trace %s\n", job.GetId(), traceID)
			}
			return c.follow(cmd.Context(), job.GetId(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	serverFlag(cmd, &server)
	sf.define(cmd)
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false,
		"print the job's id and trace id on standard error (look the trace up in your trace UI when the server exports traces: OTEL_EXPORTER_OTLP_ENDPOINT)")
	return cmd
}

func newJobGetCmd() *cobra.Command {
	var server, output string
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show a job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := newAPIClient(cmd, server)
			if err != nil {
				return err
			}
			res, err := c.jobs.GetJob(cmd.Context(), connect.NewRequest(&hodeiv1.GetJobRequest{Id: args[0]}))
			if err != nil {
				return c.explain(err)
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeProtoJSON(out, res.Msg.GetJob())
			}
			writeJobText(out, res.Msg.GetJob())
			writeJobSagas(out, res.Msg.GetSagas()) // admin.go
			return nil
		},
	}
	serverFlag(cmd, &server)
	outputFlag(cmd, &output)
	return cmd
}

func newJobListCmd() *cobra.Command {
	var (
		server, output string
		states, labels []string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			want, err := parseStates(states)
			if err != nil {
				return err
			}
			lm, err := parseKV("--label", labels)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cmd, server)
			if err != nil {
				return err
			}
			jobs, err := c.list(cmd.Context(), want, lm)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeProtoJSON(out, &hodeiv1.ListJobsResponse{Jobs: jobs})
			}
			writeJobsTable(out, jobs)
			return nil
		},
	}
	serverFlag(cmd, &server)
	outputFlag(cmd, &output)
	cmd.Flags().StringSliceVar(&states, "state", nil, "only jobs in this state, e.g. RUNNING (repeatable or comma-separated)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "only jobs with label K=V (repeatable; all must match)")
	return cmd
}

// parseStates checks --state values against the state names (case-insensitive).
func parseStates(vals []string) ([]string, error) {
	var out []string
	for _, v := range vals {
		st, err := domain.ParseJobState(strings.ToUpper(strings.TrimSpace(v)))
		if err != nil {
			names := make([]string, 0, 10)
			for _, s := range domain.AllJobStates() {
				names = append(names, string(s))
			}
			return nil, fmt.Errorf("--state: unknown state %q (want one of %s)", v, strings.Join(names, ", "))
		}
		out = append(out, string(st))
	}
	return out, nil
}

func newJobLogsCmd() *cobra.Command {
	var (
		server string
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Print a job's output (standard output and error as the job wrote them)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cmd, server)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			// Check the job exists (and the server answers) before streaming, so that a
			// typo or a stopped server gives a clear error instead of a retry loop.
			res, err := c.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: args[0]}))
			if err != nil {
				return c.explain(err)
			}
			if domain.JobState(res.Msg.GetJob().GetState()).IsTerminal() {
				follow = false
			}
			var after int64
			return c.streamLogs(ctx, args[0], follow, &after, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	serverFlag(cmd, &server)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the job ends")
	return cmd
}

func newJobCancelCmd() *cobra.Command {
	var server, reason string
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Ask for a job to be cancelled and print its state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cmd, server)
			if err != nil {
				return err
			}
			res, err := c.jobs.CancelJob(cmd.Context(), connect.NewRequest(&hodeiv1.CancelJobRequest{Id: args[0], Reason: reason}))
			if err != nil {
				return c.explain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", res.Msg.GetJob().GetId(), res.Msg.GetJob().GetState())
			return nil
		},
	}
	serverFlag(cmd, &server)
	cmd.Flags().StringVar(&reason, "reason", "", "why the job is cancelled (recorded with it)")
	return cmd
}

// submit submits spec and returns the created job.
func (c *apiClient) submit(ctx context.Context, spec *hodeiv1.JobSpec) (*hodeiv1.Job, error) {
	req := connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec})
	if c.traceParent != "" {
		req.Header().Set("traceparent", c.traceParent)
	}
	res, err := c.jobs.SubmitJob(ctx, req)
	if err != nil {
		return nil, c.explain(err)
	}
	if res.Msg.GetJob().GetId() == "" {
		return nil, errors.New("the server accepted the job but returned no id")
	}
	return res.Msg.GetJob(), nil
}

// list returns every job matching states and labels, following the pages.
func (c *apiClient) list(ctx context.Context, states []string, labels map[string]string) ([]*hodeiv1.Job, error) {
	var (
		jobs  []*hodeiv1.Job
		token string
	)
	for {
		res, err := c.jobs.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{
			States: states, Labels: labels, PageSize: 500, PageToken: token,
		}))
		if err != nil {
			return nil, c.explain(err)
		}
		jobs = append(jobs, res.Msg.GetJobs()...)
		next := res.Msg.GetNextPageToken()
		if next == "" || next == token {
			return jobs, nil
		}
		token = next
	}
}

// follow streams the job's output to stdout/stderr until the job ends and returns nil
// for exit code 0, else an *exitError (the job's exit code, or a reason).
func (c *apiClient) follow(ctx context.Context, id string, stdout, stderr io.Writer) error {
	logCtx, stopLogs := context.WithCancel(ctx)
	defer stopLogs()
	var after int64
	logsDone := make(chan error, 1)
	go func() { logsDone <- c.streamLogs(logCtx, id, true, &after, stdout, stderr) }()

	job, err := c.waitTerminal(ctx, id)
	if err != nil {
		stopLogs()
		<-logsDone
		if ctx.Err() != nil {
			return &exitError{Code: exitInterrupted, Msg: fmt.Sprintf(
				"interrupted; job %s keeps running (see `hodei job get %s`, stop it with `hodei job cancel %s`)", id, id, id)}
		}
		return err
	}
	// The follow stream ends by itself once the job has ended; if it does not soon,
	// stop it and fetch what is left without following.
	var logErr error
	select {
	case logErr = <-logsDone:
	case <-time.After(5 * time.Second):
		stopLogs()
		<-logsDone
		logErr = c.streamLogs(ctx, id, false, &after, stdout, stderr)
	}
	if logErr != nil && !errors.Is(logErr, context.Canceled) {
		fmt.Fprintf(stderr, "hodei: job %s: output may be incomplete: %v\n", id, logErr)
	}
	return jobOutcome(job)
}

// jobOutcome maps an ended job to the exit of `hodei job run`.
func jobOutcome(job *hodeiv1.Job) error {
	id, st := job.GetId(), domain.JobState(job.GetState())
	reason := job.GetLastError()
	if reason != "" {
		reason = ": " + oneLine(reason)
	}
	switch st {
	case domain.JobSucceeded:
		if code := job.GetExitCode(); code > 0 && code < 256 {
			return &exitError{Code: int(code)}
		}
		return nil
	case domain.JobFailed:
		if code := job.GetExitCode(); job.ExitCode != nil && code > 0 && code < 256 {
			// The job's own exit code, silently, unless the server knows more than
			// that (e.g. 127 for a program that could not be started).
			if last := job.GetLastError(); last == "" || last == fmt.Sprintf("exit code %d", code) {
				return &exitError{Code: int(code)}
			}
			return &exitError{Code: int(code), Msg: fmt.Sprintf("job %s FAILED with exit code %d%s", id, code, reason)}
		}
		if reason == "" {
			reason = ": no exit code"
		}
		return &exitError{Code: exitJobFailed, Msg: fmt.Sprintf("job %s FAILED%s", id, reason)}
	case domain.JobTimedOut:
		if d := job.GetSpec().GetTimeout(); reason == "" && d != nil {
			reason = " after " + d.AsDuration().String()
		}
		return &exitError{Code: exitJobTimedOut, Msg: fmt.Sprintf("job %s TIMED_OUT%s", id, reason)}
	case domain.JobCancelled:
		return &exitError{Code: exitJobCancelled, Msg: fmt.Sprintf("job %s CANCELLED%s", id, reason)}
	case domain.JobManualInterventionRequired:
		return &exitError{Code: exitJobReview, Msg: fmt.Sprintf("job %s needs an operator (MANUAL_INTERVENTION_REQUIRED)%s", id, reason)}
	}
	return &exitError{Code: exitJobFailed, Msg: fmt.Sprintf("job %s ended in unexpected state %q%s", id, st, reason)}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// stopsRun reports whether `job run` stops waiting at state st.
func stopsRun(st string) bool {
	s := domain.JobState(st)
	return s.IsTerminal() || s.RequiresManualReview()
}

// retrier paces the reopening of a broken stream: exponential backoff from 100 ms to
// 2 s, reset by progress, giving up after streamRetryFor without progress.
type retrier struct {
	pace      backoff.Pacer
	failingAt time.Time
}

func (r *retrier) progress() { r.pace.Reset(); r.failingAt = time.Time{} }

// wait sleeps before the next attempt after err; it returns err when giving up.
func (r *retrier) wait(ctx context.Context, err error) error {
	now := time.Now()
	if r.failingAt.IsZero() {
		r.failingAt = now
	}
	if now.Sub(r.failingAt) > streamRetryFor {
		return err
	}
	r.pace.Base, r.pace.Max = 100*time.Millisecond, 2*time.Second // the zero retrier is ready to use
	t := time.NewTimer(r.pace.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitTerminal watches the job until it ends (or needs an operator) and returns it,
// reopening the watch when the server goes away for a while.
func (c *apiClient) waitTerminal(ctx context.Context, id string) (*hodeiv1.Job, error) {
	var r retrier
	for {
		job, err := c.watchOnce(ctx, id, &r)
		if job != nil && stopsRun(job.GetState()) {
			return job, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil && !retryable(err) {
			return nil, c.explain(err)
		}
		if err == nil {
			err = fmt.Errorf("watch of job %s ended before the job did", id)
		}
		if werr := r.wait(ctx, err); werr != nil {
			return nil, c.explain(werr)
		}
	}
}

// watchOnce reads one WatchJob stream and returns the last job seen.
func (c *apiClient) watchOnce(ctx context.Context, id string, r *retrier) (*hodeiv1.Job, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.jobs.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var last *hodeiv1.Job
	for stream.Receive() {
		r.progress()
		last = stream.Msg().GetJob()
		if stopsRun(last.GetState()) {
			return last, nil
		}
	}
	return last, stream.Err()
}

// streamLogs prints the job's lines after *after (advancing it) to stdout and stderr.
// Without follow it prints what is stored and returns; with follow it returns when the
// server ends the stream (the job ended), reopening a stream the server broke.
func (c *apiClient) streamLogs(ctx context.Context, id string, follow bool, after *int64, stdout, stderr io.Writer) error {
	var r retrier
	for {
		err := c.logsOnce(ctx, id, follow, after, stdout, stderr, &r)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !follow || !retryable(err) {
			return c.explain(err)
		}
		if werr := r.wait(ctx, err); werr != nil {
			return c.explain(werr)
		}
	}
}

func (c *apiClient) logsOnce(ctx context.Context, id string, follow bool, after *int64, stdout, stderr io.Writer, r *retrier) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.jobs.StreamLogs(ctx, connect.NewRequest(&hodeiv1.StreamLogsRequest{Id: id, Follow: follow, AfterSeq: *after}))
	if err != nil {
		return err
	}
	defer stream.Close()
	out, errw := bufio.NewWriter(stdout), bufio.NewWriter(stderr)
	for stream.Receive() {
		r.progress()
		for _, l := range stream.Msg().GetLines() {
			if l.GetSeq() <= *after {
				continue // already printed (a reopened stream)
			}
			*after = l.GetSeq()
			w := out
			if l.GetStream() == hodeiv1.LogStream_LOG_STREAM_STDERR {
				w = errw
			}
			w.WriteString(l.GetLine())
			w.WriteByte('\n')
		}
		if err := errors.Join(out.Flush(), errw.Flush()); err != nil {
			return fmt.Errorf("write job output: %w", err)
		}
	}
	return stream.Err()
}

// writeProtoJSON prints m as protobuf JSON (field names in lowerCamelCase, the job's
// state as its domain name) on one line.
func writeProtoJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

func writeJobText(w io.Writer, j *hodeiv1.Job) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	s := j.GetSpec()
	row("id", j.GetId())
	row("name", s.GetName())
	row("namespace", namespaceOf(s))
	row("state", j.GetState())
	if j.ExitCode != nil {
		row("exit code", fmt.Sprint(j.GetExitCode()))
	}
	row("error", oneLine(j.GetLastError()))
	row("attempt", fmt.Sprintf("%d of %d", j.GetAttempt(), max(s.GetMaxAttempts(), 1)))
	row("worker", j.GetWorkerId())
	row("provider", j.GetProvider())
	row("image", s.GetImage())
	row("pull", s.GetPull())
	row("selector", joinKV(s.GetSelector()))
	if r := s.GetResources(); r != nil {
		if r.GetCpuMillis() > 0 {
			row("cpu", fmt.Sprintf("%gc", float64(r.GetCpuMillis())/1000))
		}
		if r.GetMemoryBytes() > 0 {
			row("memory", domain.FormatMemory(r.GetMemoryBytes()))
		}
	}
	if len(s.GetCommand()) > 0 {
		row("command", shellJoin(s.GetCommand()))
	}
	if sc := s.GetScript(); sc != nil {
		interp := sc.GetInterpreter()
		if interp == "" {
			interp = domain.DefaultInterpreter
		}
		row("script", fmt.Sprintf("%d bytes run by %s", len(sc.GetContent()), interp))
	}
	row("priority", fmt.Sprint(s.GetPriority()))
	if d := s.GetTimeout(); d != nil {
		row("timeout", d.AsDuration().String())
	}
	row("labels", joinKV(s.GetLabels()))
	row("env", strings.Join(slices.Sorted(maps.Keys(s.GetEnv())), " "))
	if refs := s.GetSecrets(); len(refs) > 0 {
		row("secrets", formatSecretRefs(refs))
	}
	row("created", formatTime(j.GetCreatedAt().AsTime(), j.GetCreatedAt() != nil))
	row("started", formatTime(j.GetStartedAt().AsTime(), j.GetStartedAt() != nil))
	row("finished", formatTime(j.GetFinishedAt().AsTime(), j.GetFinishedAt() != nil))
	tw.Flush()
}

func writeJobsTable(w io.Writer, jobs []*hodeiv1.Job) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAMESPACE\tSTATE\tEXIT\tPRIORITY\tCREATED\tNAME")
	for _, j := range jobs {
		exit := "-"
		if j.ExitCode != nil {
			exit = fmt.Sprint(j.GetExitCode())
		}
		name := j.GetSpec().GetName()
		if name == "" {
			name = shellJoin(j.GetSpec().GetCommand())
			if len(name) > 40 {
				name = name[:37] + "..."
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", j.GetId(), namespaceOf(j.GetSpec()), j.GetState(), exit,
			j.GetSpec().GetPriority(), formatTime(j.GetCreatedAt().AsTime(), j.GetCreatedAt() != nil), name)
	}
	tw.Flush()
}

// namespaceOf is a spec's namespace ("default" when the server did not record one).
func namespaceOf(s *hodeiv1.JobSpec) string {
	if ns := s.GetNamespace(); ns != "" {
		return ns
	}
	return domain.DefaultNamespace
}

func formatTime(t time.Time, ok bool) string {
	if !ok || t.IsZero() {
		return ""
	}
	return t.Local().Format(time.RFC3339)
}

func joinKV(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

// shellJoin renders argv for display, quoting what a shell would split.
func shellJoin(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			parts[i] = a
			continue
		}
		parts[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(parts, " ")
}
