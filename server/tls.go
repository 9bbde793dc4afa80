package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/tlsconf"
)

// serverTLS returns the API's TLS configuration (nil without Config.TLSCert) and the
// PEM CA bundle workers verify the server with (nil without TLS): a function, because
// the bundle's file is read again when it changes, so that workers started after a CA
// rotation get the new one.
func serverTLS(cfg Config, logger *slog.Logger) (*tls.Config, func() string, error) {
	if !cfg.TLS() {
		return nil, nil, nil
	}
	log := logger.With("component", "tls")
	r, err := tlsconf.NewReloader(cfg.TLSCert, cfg.TLSKey, log)
	if err != nil {
		return nil, nil, fmt.Errorf("server: %w", err)
	}
	var clientCAs *x509.CertPool
	if cfg.TLSClientCA != "" {
		if clientCAs, err = tlsconf.LoadCertPool(cfg.TLSClientCA, "--tls-client-ca"); err != nil {
			return nil, nil, fmt.Errorf("server: %w", err)
		}
	}
	workerCA, flag := cfg.TLSWorkerCA, "--tls-worker-ca"
	if workerCA == "" {
		workerCA, flag = cfg.TLSCert, "--tls-cert (the workers' CA bundle without --tls-worker-ca)"
	}
	bundle, err := tlsconf.NewPEMFile(workerCA, flag, log)
	if err != nil {
		return nil, nil, fmt.Errorf("server: %w", err)
	}
	return tlsconf.ServerConfig(r, clientCAs), bundle.Current, nil
}

// workerStreamPrefix is the path prefix of the worker stream, which authenticates with
// the workers' own credentials (one-time password, session token) instead of client
// certificates.
const workerStreamPrefix = "/" + hodeiv1connect.WorkerAgentServiceName + "/"

// requireClientCert refuses (401) every request but the worker stream's that did not
// present a client certificate verified against --tls-client-ca.
func requireClientCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, workerStreamPrefix) ||
			(r.TLS != nil && len(r.TLS.VerifiedChains) > 0) {
			next.ServeHTTP(w, r)
			return
		}
		// A Connect error body, so that Connect clients show the message.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"unauthenticated","message":"client certificate required: the server was started with --tls-client-ca (client: --client-cert and --client-key)"}` + "\n"))
	})
}
