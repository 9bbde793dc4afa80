package e2e

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// otlpReceiver is a real OTLP/HTTP trace endpoint in the test process: it decodes the
// ExportTraceServiceRequest protobufs the server and its workers export and keeps
// every span.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []span
}

// span is an exported span with what the tests look at.
type span struct {
	traceID, spanID, parentID string
	name, service             string
	pid                       int64
	attrs                     map[string]string
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.Error(w, "want POST /v1/traces", http.StatusNotFound)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var got []span
	for _, rs := range msg.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		var pid int64
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "process.pid" {
				pid = a.GetValue().GetIntValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, span{traceID: hex.EncodeToString(s.GetTraceId()), spanID: hex.EncodeToString(s.GetSpanId()),
					parentID: hex.EncodeToString(s.GetParentSpanId()), name: s.GetName(), service: res["service.name"],
					pid: pid, attrs: attrMap(s.GetAttributes())})
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			m[kv.GetKey()] = v.GetStringValue()
		default:
			m[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		}
	}
	return m
}

// trace returns the spans of traceID received so far.
func (r *otlpReceiver) trace(traceID string) []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []span
	for _, s := range r.spans {
		if s.traceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// env is the OTEL_* environment that points a server (and through it its workers) at r,
// exporting every 100 ms.
func (r *otlpReceiver) env() []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + r.srv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_TRACES_SAMPLER=parentbased_always_on"}
}

// waitTrace waits until the spans of traceID include every name of want (a name, or
// "name@service"), and returns them.
func (r *otlpReceiver) waitTrace(t *testing.T, traceID string, want []string, timeout time.Duration) []span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		spans := r.trace(traceID)
		var missing []string
		for _, w := range want {
			if findSpan(spans, w) == nil {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s lacks spans %v after %s; it has:\n%s", traceID, missing, timeout, describeSpans(spans))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSpanPrefix waits until the spans of traceID include one of service whose name
// starts with prefix, and returns them.
func (r *otlpReceiver) waitSpanPrefix(t *testing.T, traceID, prefix, service string, timeout time.Duration) []span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		spans := r.trace(traceID)
		for _, s := range spans {
			if strings.HasPrefix(s.name, prefix) && s.service == service {
				return spans
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s has no span %q… of %s after %s; it has:\n%s", traceID, prefix, service, timeout, describeSpans(spans))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// findSpan returns the first span called name ("name@service" also matches the
// service).
func findSpan(spans []span, name string) *span {
	n, svc, _ := strings.Cut(name, "@")
	for i := range spans {
		if spans[i].name == n && (svc == "" || spans[i].service == svc) {
			return &spans[i]
		}
	}
	return nil
}

func describeSpans(spans []span) string {
	var b strings.Builder
	sorted := append([]span(nil), spans...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, s := range sorted {
		fmt.Fprintf(&b, "  %s [%s pid %d] id %s parent %s\n", s.name, s.service, s.pid, s.spanID, s.parentID)
	}
	return b.String()
}

// checkOneTree checks that spans form one tree under one root whose parent is outside
// the trace (the CLI's own span id), and returns the root.
func checkOneTree(t *testing.T, spans []span) *span {
	t.Helper()
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.spanID] = true
	}
	var roots []*span
	for i, s := range spans {
		if !ids[s.parentID] {
			roots = append(roots, &spans[i])
		}
	}
	if len(roots) != 1 {
		var names []string
		for _, r := range roots {
			names = append(names, r.name+"@"+r.service)
		}
		t.Fatalf("trace has %d roots %v, want one (the SubmitJob span):\n%s", len(roots), names, describeSpans(spans))
	}
	return roots[0]
}

// parentOf returns the span whose id is s's parent, or nil.
func parentOf(spans []span, s *span) *span {
	for i := range spans {
		if spans[i].spanID == s.parentID {
			return &spans[i]
		}
	}
	return nil
}

var traceLine = regexp.MustCompile(`job (\S+), trace ([0-9a-f]{32})`)

// One job is one trace: `hodei job run -v` prints its trace id, and the spans the
// server and the worker process export to a real OTLP receiver form one tree: the
// SubmitJob request at the root, the saga steps, commands, provider create and the
// agent's registration and run (exported by the worker itself) under it.
func TestTraceOneJob(t *testing.T) { forEachBackend(t, testTraceOneJob) }

func testTraceOneJob(t *testing.T, b backend) {
	rcv := startOTLPReceiver(t)
	s := newServer(t, b, 2, "--log-format", "json", "--log-level", "info")
	s.env = rcv.env()
	s.startProcess()

	r := s.mustHodei("job", "run", "-v", "--", "sh", "-c", "echo traced")
	if r.stdout != "traced\n" {
		t.Fatalf("job run printed %q", r.stdout)
	}
	m := traceLine.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("job run -v printed no trace id: stderr %q", r.stderr)
	}
	jobID, traceID := m[1], m[2]
	spans := rcv.waitTrace(t, traceID, []string{
		"hodei.v1.JobService/SubmitJob@hodei",
		"saga.step execution/assign@hodei",
		"saga.step execution/complete@hodei",
		"saga.step provisioning/create-worker@hodei",
		"provider.create local@hodei",
		"agent.register@hodei-worker",
		"hodei.v1.WorkerAgentService/Register@hodei",
		"agent.run_job@hodei-worker",
		"provider.destroy local@hodei",
	}, 30*time.Second)
	// The outbox relay's publication of the job's events and the command handlers
	// (issue 15: "the outbox relay's dispatch", "command handlers") are in the trace
	// too. (The job's commands run inside its saga steps, not through outbox rows, so
	// no outbox.dispatch span is expected here.)
	for _, prefix := range []string{"outbox.publish job.", "command "} {
		spans = rcv.waitSpanPrefix(t, traceID, prefix, "hodei", 30*time.Second)
	}
	root := checkOneTree(t, spans)
	if root.name != "hodei.v1.JobService/SubmitJob" {
		t.Errorf("root span %q, want the SubmitJob request", root.name)
	}
	// The agent's registration is a child of the provider's create (TRACEPARENT), the
	// server's Register a child of it (traceparent header), and the run a child of a
	// server span (RunJob.trace_context).
	reg := findSpan(spans, "agent.register@hodei-worker")
	if p := parentOf(spans, reg); p == nil || p.name != "provider.create local" {
		t.Errorf("agent.register's parent is %v, want provider.create local", p)
	}
	srvReg := findSpan(spans, "hodei.v1.WorkerAgentService/Register@hodei")
	if p := parentOf(spans, srvReg); p == nil || p.name != "agent.register" {
		t.Errorf("the server's Register span's parent is %v, want agent.register", p)
	}
	run := findSpan(spans, "agent.run_job@hodei-worker")
	if p := parentOf(spans, run); p == nil || p.service != "hodei" {
		t.Errorf("agent.run_job's parent is %v, want a server span", p)
	}
	if run.attrs["hodei.job.id"] != jobID {
		t.Errorf("agent.run_job is of job %q, want %s", run.attrs["hodei.job.id"], jobID)
	}
	checkJSONLogsCarryTrace(t, s.log.String(), traceID, jobID)

	step := findSpan(spans, "saga.step execution/complete@hodei")
	for _, k := range []string{"hodei.saga.id", "hodei.saga.type", "hodei.saga.step", "hodei.saga.attempt", "hodei.saga.outcome"} {
		if step.attrs[k] == "" {
			t.Errorf("saga step span lacks %s: %v", k, step.attrs)
		}
	}
	if step.attrs["hodei.saga.outcome"] != "completed" || step.attrs["hodei.saga.type"] != "execution" {
		t.Errorf("complete step span attributes %v", step.attrs)
	}
}

// A job whose server is SIGKILLed mid-run and restarted keeps one trace: the spans of
// the second server process (the saga resumed from the database) join the tree of the
// first one's.
func TestTraceSurvivesServerKill(t *testing.T) { forEachBackend(t, testTraceSurvivesServerKill) }

func testTraceSurvivesServerKill(t *testing.T, b backend) {
	rcv := startOTLPReceiver(t)
	s := newServer(t, b, 2)
	s.env = rcv.env()
	s.startProcess()

	traceID := "5ee0e2e5ee0e2e5ee0e2e5ee0e2e5ee0"
	req := connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{
		Command: []string{"sh", "-c", "sleep 3; echo survived"}}})
	req.Header().Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := s.api.SubmitJob(context.Background(), req)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	id := res.Msg.GetJob().GetId()
	waitJobState(t, s, id, "RUNNING", 60*time.Second)
	firstPID := s.cmd.Process.Pid
	// Spans still in the process's export buffer die with it (100 ms batches here):
	// give the ones of the steps so far time to leave, then kill it mid-job.
	time.Sleep(500 * time.Millisecond)
	s.kill()
	s.startProcess()
	waitJobState(t, s, id, "SUCCEEDED", 2*time.Minute)
	spans := rcv.waitTrace(t, traceID, []string{"saga.step execution/complete@hodei", "agent.run_job@hodei-worker"}, 30*time.Second)
	checkOneTree(t, spans)
	complete := findSpan(spans, "saga.step execution/complete@hodei")
	if complete.pid == int64(firstPID) {
		t.Errorf("the complete step ran in the killed server (pid %d)?", firstPID)
	}
	pids := map[int64]bool{}
	for _, sp := range spans {
		if sp.service == "hodei" {
			pids[sp.pid] = true
		}
	}
	if len(pids) < 2 {
		t.Errorf("spans of %d server processes in the trace, want both (before and after the kill):\n%s", len(pids), describeSpans(spans))
	}
}

// waitJobState waits until job id is in state (or ended, which fails the test unless
// it is that state).
func waitJobState(t *testing.T, s *server, id, state string, timeout time.Duration) *hodeiv1.Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := s.getJob(id)
		if j.GetState() == state {
			return j
		}
		if isTerminal(j.GetState()) || time.Now().After(deadline) {
			t.Fatalf("job %s is %s (%s), want %s", id, j.GetState(), j.GetLastError(), state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkJSONLogsCarryTrace checks a --log-format json server log: records are JSON
// objects, and the provider's "worker started" record of job jobID, logged inside the
// job's trace, carries its trace_id and a span_id.
func checkJSONLogsCarryTrace(t *testing.T, log, traceID, jobID string) {
	t.Helper()
	records, found := 0, false
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %v: %q", err, line)
			continue
		}
		if rec["msg"] == nil || rec["level"] == nil || rec["time"] == nil {
			t.Errorf("JSON log record lacks msg, level or time: %q", line)
		}
		records++
		if rec["msg"] == "worker started" && rec["job_id"] == jobID {
			sid, _ := rec["span_id"].(string)
			if rec["trace_id"] != traceID || len(sid) != 16 {
				t.Errorf("worker started record of job %s: trace_id %v span_id %v, want trace %s and a span id", jobID, rec["trace_id"], rec["span_id"], traceID)
			}
			found = true
		}
	}
	if records < 3 || !found {
		t.Errorf("--log-format json: %d JSON records, worker started of job %s found %v; log:\n%s", records, jobID, found, tail(log, 3000))
	}
}
