package server

import "testing"

// The instance id of a data directory is created once and then kept: a restarted
// server claims sagas under the same runner id (and releases its dead run's claims).
func TestInstanceIDStable(t *testing.T) {
	dir := t.TempDir()
	a, err := instanceID(dir)
	if err != nil || a == "" {
		t.Fatalf("first instanceID: %q, %v", a, err)
	}
	b, err := instanceID(dir)
	if err != nil || b != a {
		t.Fatalf("second instanceID: %q, %v; want %q", b, err, a)
	}
	if c, err := instanceID(t.TempDir()); err != nil || c == a {
		t.Fatalf("another data dir has id %q (%v), want a new one", c, err)
	}
}
