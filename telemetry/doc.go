// Package telemetry sets up what an operator sees of a Hodei process: OpenTelemetry
// traces exported over OTLP, log records that name their trace, and Prometheus metrics.
//
// # Traces
//
// Tracing follows the standard OTEL_* environment variables and is off when none of
// them names an endpoint: OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turns it on, OTEL_EXPORTER_OTLP_PROTOCOL (or
// _TRACES_PROTOCOL) picks http/protobuf (the default) or grpc, OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG choose the sampler, OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES name the process, OTEL_EXPORTER_OTLP_HEADERS and the other
// exporter variables are read by the exporter itself, and OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none turn it off again. When tracing is off no provider is
// installed: the OpenTelemetry API's no-op tracer costs one interface call per span.
//
// One job is one trace. The W3C trace context (traceparent) of the SubmitJob request is
// stored with everything the request causes: the outbox rows (outbox), the saga events
// (saga; a saga resumed by another runner or after a restart continues the trace it
// started in), the worker's environment when it is created (TRACEPARENT, so its
// registration joins the trace) and the RunJob message on the worker's stream (the
// agent's spans of running the job). WorkerEnv hands the exporter settings to workers,
// which export their own spans to the same endpoint.
//
// # Logs
//
// NewLogger builds the process's slog.Logger (text or JSON); records logged with a
// context that carries a span get trace_id and span_id attributes.
//
// # Metrics
//
// Metrics uses client_golang rather than the OpenTelemetry metrics SDK with its
// Prometheus exporter: the exposition is Prometheus's own (names and units exactly as
// written, no otel_scope_* labels or unit suffixes added by a translation layer), the
// Go runtime and process collectors come with it, and gauges read from the database at
// scrape time (queue depth, outbox lag, workers) are plain prometheus.Collectors. The
// metrics are registered on a Registry of their own (no global registry), served by
// Handler on the API port's /metrics and on --metrics-listen.
package telemetry
