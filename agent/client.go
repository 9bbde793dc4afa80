package agent

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"time"
)

// NewHTTPClient returns an http.Client for the Connect API at serverURL. Bidirectional
// Connect streams need HTTP/2: for an http:// URL it speaks HTTP/2 over cleartext with
// prior knowledge (h2c, no HTTP/1.1); for https:// it negotiates HTTP/2 over TLS.
// HTTP/2 pings detect a dead server on an idle stream. There is no overall timeout
// (streams are long-lived): use contexts.
func NewHTTPClient(serverURL string) *http.Client {
	return NewTLSHTTPClient(serverURL, nil)
}

// NewTLSHTTPClient is NewHTTPClient verifying an https:// server with roots (nil: the
// system's roots).
func NewTLSHTTPClient(serverURL string, roots *x509.CertPool) *http.Client {
	var protocols http.Protocols
	if strings.HasPrefix(strings.ToLower(serverURL), "https://") {
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Protocols:           &protocols,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     10 * time.Second,
		},
	}}
}
