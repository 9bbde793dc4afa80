package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs url (a /metrics endpoint) as Prometheus would and parses the text
// format with Prometheus's own parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	return scrapeRequest(t, url, nil)
}

// scrapeRequest is scrape with edit applied to the request (if not nil).
func scrapeRequest(t *testing.T, url string, edit func(*http.Request)) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	if edit != nil {
		edit(req)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("scrape %s: %s: %s", url, res.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// metricValue is the value of the series of family name whose labels include want
// (summed over the series that match), and whether any matched. Histograms give their
// sample count.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, found
}

// freePort returns a loopback address with a port free right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// /metrics follows real activity: after 5 succeeding jobs and 1 failing one, the
// counters, histograms and gauges say so, on the API port and on --metrics-listen.
func TestMetricsFollowJobs(t *testing.T) { forEachBackend(t, testMetricsFollowJobs) }

func testMetricsFollowJobs(t *testing.T, b backend) {
	metricsAddr := freePort(t)
	s := startServerArgs(t, b, 4, "--metrics-listen", metricsAddr)
	before := scrape(t, s.url+"/metrics")
	if v, _ := metricValue(before, "hodei_jobs_submitted_total", nil); v != 0 {
		t.Fatalf("hodei_jobs_submitted_total %v before any job", v)
	}
	for i := range 5 {
		s.submit("--label", "m=1", "--", "sh", "-c", fmt.Sprintf("echo %d", i))
	}
	s.submit("--label", "m=1", "--", "sh", "-c", "exit 3")
	jobs := s.waitJobs(map[string]string{"m": "1"}, 6, 2*time.Minute)
	if st := countStates(jobs); st["SUCCEEDED"] != 5 || st["FAILED"] != 1 {
		t.Fatalf("jobs ended %v, want 5 SUCCEEDED and 1 FAILED", st)
	}

	// Finished counts are recorded after commit: wait for them to settle.
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams = scrape(t, s.url+"/metrics")
		if v, _ := metricValue(fams, "hodei_jobs_finished_total", nil); v == 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	check := func(name string, labels map[string]string, want float64) {
		t.Helper()
		got, ok := metricValue(fams, name, labels)
		if !ok || got != want {
			t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
		}
	}
	check("hodei_jobs_submitted_total", nil, 6)
	check("hodei_jobs_finished_total", map[string]string{"state": "SUCCEEDED", "provider": "local"}, 5)
	check("hodei_jobs_finished_total", map[string]string{"state": "FAILED", "provider": "local"}, 1)
	check("hodei_job_start_latency_seconds", nil, 6)
	check("hodei_job_run_duration_seconds", nil, 6)
	check("hodei_saga_steps_total", map[string]string{"saga_type": "execution", "step": "complete", "outcome": "completed"}, 6)
	check("hodei_saga_step_duration_seconds", map[string]string{"saga_type": "execution", "step": "complete"}, 6)
	check("hodei_api_requests_total", map[string]string{"method": "/hodei.v1.JobService/SubmitJob", "code": "ok"}, 6)
	check("hodei_api_request_duration_seconds", map[string]string{"method": "/hodei.v1.JobService/SubmitJob"}, 6)
	check("hodei_leader", nil, 1)
	check("hodei_jobs_manual_intervention", nil, 0)
	check("hodei_outbox_dead_letters", nil, 0)
	if v, _ := metricValue(fams, "hodei_jobs_pending", nil); v != 0 {
		t.Errorf("hodei_jobs_pending %v after every job ended", v)
	}
	// Gauges read from the database, and the runtime and process collectors.
	for _, name := range []string{"hodei_outbox_rows", "hodei_outbox_oldest_pending_age_seconds",
		"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s missing from the scrape", name)
		}
	}

	// The same registry on --metrics-listen.
	other := scrape(t, "http://"+metricsAddr+"/metrics")
	if v, _ := metricValue(other, "hodei_jobs_submitted_total", nil); v != 6 {
		t.Errorf("--metrics-listen: hodei_jobs_submitted_total %v, want 6", v)
	}
}
