package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
)

// Client side of the Hodei API, shared by the commands that talk to a running server
// (`hodei job …`, `hodei bench jobs --server`).
//
// The client speaks the Connect protocol over HTTP/2 without TLS (h2c, "prior
// knowledge"): `hodei server` serves HTTP/1.1 and h2c on the same port, and HTTP/2 lets
// one connection carry the log stream, the watch stream and unary calls at once. An
// https:// server URL uses TLS with ALPN (HTTP/2 when the server offers it).

const (
	envServer        = "HODEI_SERVER"
	defaultServerURL = "http://127.0.0.1:7070"
)

// serverFlag defines --server bound to HODEI_SERVER.
func serverFlag(cmd *cobra.Command, p *string) {
	stringFlagEnv(cmd, p, "server", envServer, defaultServerURL, "URL of the Hodei server")
}

// exitError ends the hodei process with Code. main prints Msg (when set) on stderr as
// "hodei: Msg"; an empty Msg prints nothing (e.g. `job run` passing on the job's own exit
// code after the job's output).
type exitError struct {
	Code int
	Msg  string
}

func (e *exitError) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Msg
}

// apiClient is a JobService client bound to one server.
type apiClient struct {
	baseURL string
	hc      *http.Client // h2c, or TLS with the CLI's CA bundle and client certificate
	token   string       // sent as Authorization: Bearer; may be empty
	jobs    hodeiv1connect.JobServiceClient
	// traceParent, if set, is sent with SubmitJob (job run -v): the job's trace id.
	traceParent string
}

// checkServerURL returns the normalised server URL or an error naming --server.
func checkServerURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--server: want an http:// or https:// URL, got %q", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("--server: no host in %q", raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// newAPIClient returns a client of the server at rawURL (validated first), or of the
// context's server, sending the token of --token, HODEI_TOKEN or the context
// (context.go).
func newAPIClient(cmd *cobra.Command, rawURL string) (*apiClient, error) {
	rawURL, token, err := connection(cmd, rawURL)
	if err != nil {
		return nil, err
	}
	base, err := checkServerURL(rawURL)
	if err != nil {
		return nil, err
	}
	hc, err := clientHTTP(cmd, base)
	if err != nil {
		return nil, err
	}
	return &apiClient{
		baseURL: base,
		hc:      hc,
		token:   token,
		jobs:    hodeiv1connect.NewJobServiceClient(hc, base, bearer(token)...),
	}, nil
}

// bearer returns the client options that send token (none for an empty one).
func bearer(token string) []connect.ClientOption {
	if token == "" {
		return nil
	}
	return []connect.ClientOption{connect.WithInterceptors(bearerInterceptor(token))}
}

type bearerInterceptor string

func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// newHTTPClient returns an http.Client for the Connect clients: h2c (HTTP/2 with prior
// knowledge) for plain http:// servers, ordinary TLS negotiation otherwise (with tlsCfg
// when not nil: clientHTTP). There is no overall timeout: streams live as long as the
// job; calls carry their own contexts.
func newHTTPClient(cleartext bool, tlsCfg *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg
	}
	if cleartext {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	// Sent before the first stream of an h2c connection: a dead peer is noticed.
	tr.HTTP2 = &http.HTTP2Config{PingTimeout: 15 * time.Second, SendPingTimeout: 30 * time.Second}
	return &http.Client{Transport: tr}
}

// explain turns an RPC error into what a user can act on: a server that cannot be reached
// gets the hint to start it or point --server elsewhere; a refused request gets the
// server's message (which names the field).
func (c *apiClient) explain(err error) error {
	if err == nil {
		return nil
	}
	if unreachable(err) {
		return fmt.Errorf("cannot reach the Hodei server at %s: is `hodei server` running? (set --server or %s)", c.baseURL, envServer)
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeUnauthenticated:
			return fmt.Errorf("not authenticated: %s (set --token, %s or a context: hodei context add)", ce.Message(), envToken)
		case connect.CodePermissionDenied:
			return fmt.Errorf("not allowed: %s", ce.Message())
		case connect.CodeResourceExhausted:
			return fmt.Errorf("refused: %s", ce.Message())
		case connect.CodeInvalidArgument:
			return fmt.Errorf("refused by the server: %s", ce.Message())
		case connect.CodeNotFound:
			return fmt.Errorf("not found: %s", ce.Message())
		case connect.CodeFailedPrecondition:
			return fmt.Errorf("not possible now: %s", ce.Message())
		}
		return fmt.Errorf("%s: %s", ce.Code(), ce.Message())
	}
	return err
}

// unreachable reports whether err means no server listens at the address (or the name
// does not resolve).
func unreachable(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr)
}

// retryable reports whether a stream that broke with err is worth opening again: the
// server went away (restart, network) rather than refusing the request.
func retryable(err error) bool {
	if unreachable(err) {
		return true
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal, connect.CodeDeadlineExceeded,
		connect.CodeAborted:
		return true
	}
	return false
}
