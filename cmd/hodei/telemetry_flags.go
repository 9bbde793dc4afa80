package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/hodei-jobs/hodei/internal/workercmd"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/internal/otlpsink"
	"github.com/hodei-jobs/hodei/server"
	"github.com/hodei-jobs/hodei/telemetry"
)

// Environment variables of the observability flags of `hodei server` and `hodei dev`.
const (
	envLogFormat     = "HODEI_LOG_FORMAT"
	envMetricsListen = "HODEI_METRICS_LISTEN"
)

// observabilityFlags defines --log-format and --metrics-listen.
func observabilityFlags(cmd *cobra.Command, logFormat *string, cfg *server.Config) {
	stringFlagEnv(cmd, logFormat, "log-format", envLogFormat, telemetry.LogText,
		"log format on standard error: text or json (records logged inside a traced request carry trace_id and span_id)")
	stringFlagEnv(cmd, &cfg.MetricsListen, "metrics-listen", envMetricsListen, "",
		"also serve GET /metrics (Prometheus) on this TCP address, without authentication (bind it to a private address); the API port serves it too, to viewer tokens under --auth")
}

// startTracing installs the OpenTelemetry trace pipeline of the OTEL_* environment
// (off when no endpoint is set; see go doc ./telemetry) for service and returns the
// function that flushes it at exit.
func startTracing(ctx context.Context, service string, logger *slog.Logger) (func(), error) {
	return workercmd.StartTracing(ctx, service, logger)
}

// traceSinkFlag defines --trace-sink on a bench command.
func traceSinkFlag(cmd *cobra.Command, p *bool) {
	cmd.Flags().BoolVar(p, "trace-sink", false,
		"trace everything and export it (OTLP/HTTP, its workers too) to a receiver in this process that decodes and counts the spans: compare with a run without it to see the cost of tracing")
}

// startTraceSink starts the in-process receiver of --trace-sink, points this process's
// OTEL_* environment (and so its workers') at it and installs the trace pipeline. The
// returned function flushes the spans and reports how many the sink received.
func startTraceSink(ctx context.Context, logger *slog.Logger) (func() int64, error) {
	sink, err := otlpsink.Start()
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": sink.URL(), "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_TRACES_SAMPLER": "always_on"} {
		if err := os.Setenv(k, v); err != nil {
			return nil, err
		}
	}
	stop, err := startTracing(ctx, telemetry.ServerServiceName, logger)
	if err != nil {
		_ = sink.Close()
		return nil, err
	}
	return func() int64 {
		stop()
		n := sink.Spans()
		_ = sink.Close()
		return n
	}, nil
}
