package telemetry

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hodei-jobs/hodei/store"
)

// Metric names, as exported (tests and deploy/observability refer to them).
const (
	MetricJobsSubmitted        = "hodei_jobs_submitted_total"
	MetricJobsFinished         = "hodei_jobs_finished_total"
	MetricJobStartLatency      = "hodei_job_start_latency_seconds"
	MetricJobRunDuration       = "hodei_job_run_duration_seconds"
	MetricJobsPending          = "hodei_jobs_pending"
	MetricJobsManual           = "hodei_jobs_manual_intervention"
	MetricOutboxRows           = "hodei_outbox_rows"
	MetricOutboxOldestPending  = "hodei_outbox_oldest_pending_age_seconds"
	MetricOutboxDeadLetters    = "hodei_outbox_dead_letters"
	MetricSagaSteps            = "hodei_saga_steps_total"
	MetricSagaStepDuration     = "hodei_saga_step_duration_seconds"
	MetricSagaConflicts        = "hodei_saga_conflicts_total"
	MetricWorkers              = "hodei_workers"
	MetricWorkerLosses         = "hodei_worker_losses_total"
	MetricAPIRequests          = "hodei_api_requests_total"
	MetricAPIRequestDuration   = "hodei_api_request_duration_seconds"
	MetricLeader               = "hodei_leader"
	MetricGaugeScrapeErrors    = "hodei_metrics_scrape_errors_total"
	latencyBucketsDescription  = "0.01s to about 10 min"
	durationBucketsDescription = "0.1s to about 2.8 h"
)

// Metrics are the metrics of one server process, on a registry of their own. A nil
// *Metrics records nothing, so parts built without metrics need no checks.
type Metrics struct {
	reg              *prometheus.Registry
	jobsSubmitted    prometheus.Counter
	jobsFinished     *prometheus.CounterVec
	startLatency     prometheus.Histogram
	runDuration      *prometheus.HistogramVec
	sagaSteps        *prometheus.CounterVec
	sagaStepDuration *prometheus.HistogramVec
	sagaConflicts    *prometheus.CounterVec
	workerLosses     *prometheus.CounterVec
	apiRequests      *prometheus.CounterVec
	apiDuration      *prometheus.HistogramVec
	scrapeErrors     prometheus.Counter
}

// NewMetrics returns the metrics with the Go runtime and process collectors registered.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	latency := prometheus.ExponentialBuckets(0.01, 2.5, 12) // 10 ms … ~10 min
	duration := prometheus.ExponentialBuckets(0.1, 2.5, 12) // 100 ms … ~2.8 h
	fast := prometheus.ExponentialBuckets(0.0005, 2.5, 12)  // 0.5 ms … ~30 s
	m := &Metrics{
		reg: reg,
		jobsSubmitted: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricJobsSubmitted,
			Help: "Jobs accepted by SubmitJob on this replica."}),
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricJobsFinished,
			Help: "Jobs that reached an end state (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, MANUAL_INTERVENTION_REQUIRED), by state and by the provider of their last worker (\"none\" when they never had one), counted by the replica that recorded it."},
			[]string{"state", "provider"}),
		startLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricJobStartLatency,
			Help: "Time from a job's submission to its RUNNING state (" + latencyBucketsDescription + ").", Buckets: latency}),
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricJobRunDuration,
			Help: "Time from a job's RUNNING state to its end, by end state (" + durationBucketsDescription + ").", Buckets: duration},
			[]string{"state"}),
		sagaSteps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricSagaSteps,
			Help: "Saga step runs (and compensations), by saga type, step and outcome (completed, failed, waiting, compensated, compensation_failed)."},
			[]string{"saga_type", "step", "outcome"}),
		sagaStepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricSagaStepDuration,
			Help: "Duration of one saga step run, by saga type and step.", Buckets: fast},
			[]string{"saga_type", "step"}),
		sagaConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricSagaConflicts,
			Help: "Saga history appends that lost to a concurrent append (a signal, a timer, another runner), by saga type."},
			[]string{"saga_type"}),
		workerLosses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricWorkerLosses,
			Help: "Workers found lost with a job on them, by the rule that found them (exited, disconnected, heartbeat, assign)."},
			[]string{"rule"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricAPIRequests,
			Help: "API calls (Connect, gRPC, gRPC-Web), by procedure and code (ok or the Connect/gRPC code name)."},
			[]string{"method", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricAPIRequestDuration,
			Help: "Duration of unary API calls, by procedure.", Buckets: fast},
			[]string{"method"}),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricGaugeScrapeErrors,
			Help: "Scrapes whose database gauges could not be read (the gauges are then missing from that scrape)."}),
	}
	reg.MustRegister(m.jobsSubmitted, m.jobsFinished, m.startLatency, m.runDuration, m.sagaSteps, m.sagaStepDuration,
		m.sagaConflicts, m.workerLosses, m.apiRequests, m.apiDuration, m.scrapeErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// InitSeries creates the labelled counters that have known label values at 0, so that
// they are scraped (and rate() and alerts work) before their first event: worker losses
// by every rule, and saga conflicts and step failures of the given saga types.
func (m *Metrics) InitSeries(sagaTypes ...string) {
	for _, rule := range []string{"exited", "disconnected", "heartbeat", "assign"} {
		m.workerLosses.WithLabelValues(rule)
	}
	for _, t := range sagaTypes {
		m.sagaConflicts.WithLabelValues(t)
	}
}

// Handler serves the metrics in the Prometheus text format (or OpenMetrics when asked).
// A gauge that cannot be read leaves that gauge out of the scrape and counts an error;
// the rest is served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true})
}

// Registry is the metrics' registry (for tests and extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// JobSubmitted counts a job accepted by SubmitJob.
func (m *Metrics) JobSubmitted() {
	if m != nil {
		m.jobsSubmitted.Inc()
	}
}

// JobStarted records a job's submit→RUNNING latency.
func (m *Metrics) JobStarted(latency time.Duration) {
	if m != nil {
		m.startLatency.Observe(latency.Seconds())
	}
}

// JobFinished counts a job that reached end state state on a worker of provider ("" when
// it had none) and, when it ran (run > 0), records how long it ran.
func (m *Metrics) JobFinished(state, provider string, run time.Duration) {
	if m == nil {
		return
	}
	if provider == "" {
		provider = "none"
	}
	m.jobsFinished.WithLabelValues(state, provider).Inc()
	if run > 0 {
		m.runDuration.WithLabelValues(state).Observe(run.Seconds())
	}
}

// SagaStep counts one run of a saga step with its outcome and duration.
func (m *Metrics) SagaStep(sagaType, step, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.sagaSteps.WithLabelValues(sagaType, step, outcome).Inc()
	m.sagaStepDuration.WithLabelValues(sagaType, step).Observe(d.Seconds())
}

// SagaConflict counts a saga append that lost to a concurrent one.
func (m *Metrics) SagaConflict(sagaType string) {
	if m != nil {
		m.sagaConflicts.WithLabelValues(sagaType).Inc()
	}
}

// WorkerLost counts a worker found lost by rule.
func (m *Metrics) WorkerLost(rule string) {
	if m != nil {
		m.workerLosses.WithLabelValues(rule).Inc()
	}
}

// APIRequest counts an API call of procedure that ended with code; unary calls (d > 0)
// also record their duration.
func (m *Metrics) APIRequest(procedure, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.apiRequests.WithLabelValues(procedure, code).Inc()
	if d > 0 {
		m.apiDuration.WithLabelValues(procedure).Observe(d.Seconds())
	}
}

// GaugeSources are what the database gauges are read from at scrape time.
type GaugeSources struct {
	Store store.GaugeReader
	// Outbox counts outbox rows by status (store.OutboxStore).
	Outbox interface {
		CountByStatus(ctx context.Context) (map[store.OutboxStatus]int, error)
	}
	// Leading reports whether this replica leads (nil: the gauge is left out).
	Leading func() bool
	// Now is the clock of the outbox lag (default time.Now).
	Now func() time.Time
	// Timeout bounds the queries of one scrape (default 5s).
	Timeout time.Duration
}

// RegisterGauges adds the gauges read from src at every scrape: PENDING jobs by
// priority, jobs waiting for a human, workers by state and provider, outbox rows by
// status, dead letters, the age of the oldest pending outbox row and leader status.
func (m *Metrics) RegisterGauges(src GaugeSources) error {
	if src.Now == nil {
		src.Now = time.Now
	}
	if src.Timeout == 0 {
		src.Timeout = 5 * time.Second
	}
	return m.reg.Register(&gaugeCollector{m: m, src: src,
		pending: prometheus.NewDesc(MetricJobsPending, "Jobs waiting in PENDING, by priority.", []string{"priority"}, nil),
		manual: prometheus.NewDesc(MetricJobsManual,
			"Jobs in MANUAL_INTERVENTION_REQUIRED (waiting for hodei admin job resume).", nil, nil),
		workers: prometheus.NewDesc(MetricWorkers, "Workers that are not TERMINATED, by state and provider.",
			[]string{"state", "provider"}, nil),
		outbox: prometheus.NewDesc(MetricOutboxRows, "Outbox rows by status.", []string{"status"}, nil),
		dead:   prometheus.NewDesc(MetricOutboxDeadLetters, "Outbox rows in DEAD_LETTER (hodei admin dead-letters list).", nil, nil),
		lag: prometheus.NewDesc(MetricOutboxOldestPending,
			"Age of the oldest outbox row still PENDING (relay lag; 0 when none is pending).", nil, nil),
		leader: prometheus.NewDesc(MetricLeader, "1 when this replica leads (runs the scheduler and the cleanup scan), else 0.", nil, nil),
	})
}

type gaugeCollector struct {
	m                                                   *Metrics
	src                                                 GaugeSources
	pending, manual, workers, outbox, dead, lag, leader *prometheus.Desc
}

func (c *gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.manual, c.workers, c.outbox, c.dead, c.lag, c.leader} {
		ch <- d
	}
}

func (c *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Leading != nil {
		v := 0.0
		if c.src.Leading() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.src.Timeout)
	defer cancel()
	if c.src.Store != nil {
		g, err := c.src.Store.Gauges(ctx)
		if err != nil {
			c.m.scrapeErrors.Inc()
			ch <- prometheus.NewInvalidMetric(c.pending, err)
		} else {
			if _, ok := g.PendingByPriority[0]; !ok { // the series exists with an empty queue
				ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, 0, "0")
			}
			for p, n := range g.PendingByPriority {
				ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(n), strconv.Itoa(p))
			}
			ch <- prometheus.MustNewConstMetric(c.manual, prometheus.GaugeValue, float64(g.ManualIntervention))
			for _, w := range g.Workers {
				ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(w.N), w.State, w.Provider)
			}
			age := 0.0
			if !g.OldestPendingOutbox.IsZero() {
				age = max(0, c.src.Now().Sub(g.OldestPendingOutbox).Seconds())
			}
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, age)
		}
	}
	if c.src.Outbox != nil {
		counts, err := c.src.Outbox.CountByStatus(ctx)
		if err != nil {
			c.m.scrapeErrors.Inc()
			ch <- prometheus.NewInvalidMetric(c.outbox, err)
			return
		}
		for st, n := range counts {
			ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, float64(n), string(st))
		}
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(counts[store.OutboxDeadLetter]))
	}
}
