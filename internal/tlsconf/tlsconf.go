// Package tlsconf builds the TLS configurations of the API: the server's (a certificate
// reloaded when its files change, optional client certificates) and the clients' (the
// CLI and the worker agent: a CA bundle to verify the server, an optional client
// certificate).
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Environment variables a provider sets for a worker so that it verifies the server:
// the CA bundle as a file, or its PEM text (a provider that cannot place a file).
const (
	EnvCACert    = "HODEI_CA_CERT"
	EnvCACertPEM = "HODEI_CA_CERT_PEM"
)

// ParseCertPool returns a pool of the PEM certificates in pem; what names the source in
// errors (a flag, a variable).
func ParseCertPool(pem []byte, what string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", what)
	}
	return pool, nil
}

// LoadCertPool reads the PEM certificates of the file path; what names the source in
// errors.
func LoadCertPool(path, what string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ParseCertPool(b, what+" "+path)
}

// ClientConfig returns the TLS configuration of an API client: the server is verified
// with roots (nil: the system's roots); certFile and keyFile, both set or both empty,
// are the client certificate for a server that requires one (mTLS).
func ClientConfig(roots *x509.CertPool, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--client-cert and --client-key go together")
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--client-cert/--client-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// Reloader serves a certificate and its key from two files and loads them again when
// either changes (another file, modification time or size): a renewed certificate is
// used from the next handshake on, without a restart. When the new files do not load
// (a renewal half-written), it keeps serving the previous certificate and tries again
// at the next handshake.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	certStat  os.FileInfo
	keyStat   os.FileInfo
	lastError time.Time
}

// NewReloader loads certFile and keyFile (errors name --tls-cert and --tls-key).
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	cs, ks, err := r.stat()
	if err != nil {
		return nil, err
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", certFile, keyFile, err)
	}
	r.cert, r.certStat, r.keyStat = &c, cs, ks
	return r, nil
}

func (r *Reloader) stat() (os.FileInfo, os.FileInfo, error) {
	cs, err := os.Stat(r.certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert: %w", err)
	}
	ks, err := os.Stat(r.keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-key: %w", err)
	}
	return cs, ks, nil
}

func changed(old, cur os.FileInfo) bool {
	return !os.SameFile(old, cur) || !old.ModTime().Equal(cur.ModTime()) || old.Size() != cur.Size()
}

// GetCertificate is tls.Config.GetCertificate: the current certificate, reloaded first
// when its files changed.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, ks, err := r.stat()
	if err == nil && (changed(r.certStat, cs) || changed(r.keyStat, ks)) {
		var c tls.Certificate
		if c, err = tls.LoadX509KeyPair(r.certFile, r.keyFile); err == nil {
			r.cert, r.certStat, r.keyStat = &c, cs, ks
			r.log.Info("TLS certificate reloaded", "cert", r.certFile, "key", r.keyFile)
		}
	}
	if err != nil && time.Since(r.lastError) > time.Minute {
		r.lastError = time.Now()
		r.log.Warn("TLS certificate files do not load; serving the previous certificate", "err", err)
	}
	return r.cert, nil
}

// ServerConfig returns the API server's TLS configuration: the certificate of r and,
// with clientCAs, client certificates verified against them when given. Whether a
// request must present one is the handler's decision (the worker stream has its own
// credentials).
func ServerConfig(r *Reloader, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg
}

// PEMFile is a PEM CA bundle read from a file and read again when the file changes
// (another file, modification time or size), as the server's workers' CA bundle: a
// rotated CA reaches the workers started afterwards without a restart. A new file that
// holds no certificate (half-written) leaves the previous bundle in use.
type PEMFile struct {
	path, what string
	log        *slog.Logger

	mu        sync.Mutex
	pem       string
	stat      os.FileInfo
	lastError time.Time
}

// NewPEMFile reads the bundle at path; what names its flag in errors.
func NewPEMFile(path, what string, log *slog.Logger) (*PEMFile, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &PEMFile{path: path, what: what, log: log}
	st, pem, err := f.read()
	if err != nil {
		return nil, err
	}
	f.stat, f.pem = st, pem
	return f, nil
}

func (f *PEMFile) read() (os.FileInfo, string, error) {
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", f.what, err)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", f.what, err)
	}
	if _, err := ParseCertPool(b, f.what+" "+f.path); err != nil {
		return nil, "", err
	}
	return st, string(b), nil
}

// Current returns the bundle, read again first when the file changed.
func (f *PEMFile) Current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.path)
	if err == nil && changed(f.stat, st) {
		var pem string
		if st, pem, err = f.read(); err == nil {
			f.stat, f.pem = st, pem
			f.log.Info("CA bundle for workers reloaded", "file", f.path)
		}
	}
	if err != nil && time.Since(f.lastError) > time.Minute {
		f.lastError = time.Now()
		f.log.Warn("CA bundle for workers does not load; handing out the previous one", "file", f.path, "err", err)
	}
	return f.pem
}
