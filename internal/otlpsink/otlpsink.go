// Package otlpsink is an OTLP/HTTP trace endpoint on loopback that decodes what it
// receives and counts the spans: the receiver of `hodei bench ... --trace-sink`, so that
// the cost of tracing is measured with real exports (encoding, HTTP, decoding) and no
// collector to install.
package otlpsink

import (
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Sink is a running OTLP/HTTP trace receiver.
type Sink struct {
	srv   *http.Server
	ln    net.Listener
	spans atomic.Int64
}

// Start listens on a free loopback port and serves POST /v1/traces.
func Start() (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("otlpsink: listen: %w", err)
	}
	s := &Sink{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", s.traces)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the endpoint for OTEL_EXPORTER_OTLP_ENDPOINT.
func (s *Sink) URL() string { return "http://" + s.ln.Addr().String() }

// Spans returns how many spans were received.
func (s *Sink) Spans() int64 { return s.spans.Load() }

// Close stops the receiver.
func (s *Sink) Close() error { return s.srv.Close() }

func (s *Sink) traces(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, "otlpsink: "+err.Error(), http.StatusBadRequest)
		return
	}
	var n int64
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += int64(len(ss.GetSpans()))
		}
	}
	s.spans.Add(n)
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}
