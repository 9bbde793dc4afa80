package kubetest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// shared is the one cluster of this test binary: package state by necessity, as in
// dockertest and pgtest (every test reaches it through Get or API).
type shared struct {
	mu      sync.Mutex
	c       *Cluster
	err     error // a failed start, reported to every later caller
	nodeErr error
}

var (
	oneMu sync.Mutex
	one   *shared
)

func current() *shared {
	oneMu.Lock()
	defer oneMu.Unlock()
	if one == nil {
		one = &shared{}
	}
	return one
}

// API returns this test binary's cluster, starting it API-only (etcd,
// kube-apiserver, kube-scheduler, kube-controller-manager; no node, so Pods stay
// Pending) on first use. If a node cluster is already running, that one is returned.
// It fails the test (never skips) when the cluster cannot start.
func API(t testing.TB) *Cluster {
	t.Helper()
	s := current()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil && s.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // a first build is long
		defer cancel()
		s.c, s.err = Start(ctx, Options{})
		if s.c != nil {
			fmt.Fprintf(os.Stderr, "kubetest: API server ready in %s\n", s.c.Timings.APIReady.Round(time.Millisecond))
		}
	}
	if s.err != nil {
		t.Fatalf("%v", s.err)
	}
	return s.c
}

// Get returns this test binary's cluster with its node (containerd and a kubelet)
// Ready, starting what is missing on first use. It fails the test (never skips) when
// the cluster cannot start. Call Main (or wrap the tests with Wrap) so that it is
// stopped at the end.
func Get(t testing.TB) *Cluster {
	t.Helper()
	c := API(t)
	s := current()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.kubelet == nil && s.nodeErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		s.nodeErr = c.StartNode(ctx)
		if s.nodeErr == nil {
			fmt.Fprintf(os.Stderr, "kubetest: node Ready in %s from an empty directory (API server %s)\n",
				c.Timings.NodeReady.Round(time.Millisecond), c.Timings.APIReady.Round(time.Millisecond))
		}
	}
	if s.nodeErr != nil {
		t.Fatalf("%v", s.nodeErr)
	}
	return c
}

// Runner is what testing.M provides.
type Runner interface{ Run() int }

// Wrap returns m whose Run also stops the cluster Get or API may have started.
func Wrap(m Runner) Runner { return wrapped{m} }

type wrapped struct{ m Runner }

func (w wrapped) Run() int {
	code := w.m.Run()
	oneMu.Lock()
	s := one
	one = nil
	oneMu.Unlock()
	if s != nil {
		s.mu.Lock()
		s.c.Stop()
		s.mu.Unlock()
	}
	return code
}

// Main runs the tests and stops the cluster; call it from TestMain of packages that
// need Kubernetes and no other helper's Main (else wrap: pgtest.Main(kubetest.Wrap(m))).
func Main(m *testing.M) { os.Exit(Wrap(m).Run()) }
