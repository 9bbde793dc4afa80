package main

import (
	"strings"
	"testing"
)

// The liveness flags are on both platform commands, and settings that cannot work are
// refused naming the flag before anything starts.
func TestLivenessFlags(t *testing.T) {
	for _, sub := range []string{"server", "dev"} {
		out, err := runHodei(t, sub, "--help")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"--heartbeat-interval", "--worker-lost-after", "--cleanup-interval",
			"--creating-timeout", "--cleanup-dry-run", "--disconnect-grace", "--registration-timeout", "HODEI_WORKER_LOST_AFTER"} {
			if !strings.Contains(out, s) {
				t.Errorf("%s --help does not mention %s", sub, s)
			}
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--heartbeat-interval", "5s", "--worker-lost-after", "2s"}, "--worker-lost-after (2s) must be at least --heartbeat-interval (5s)"},
		{[]string{"--cleanup-interval", "-1s"}, "--cleanup-interval: must not be negative"},
		{[]string{"--heartbeat-interval", "1s", "--disconnect-grace", "4s"}, "--disconnect-grace (4s) must not exceed --worker-lost-after (3s)"},
		{[]string{"--registration-timeout", "-3s"}, "--registration-timeout: must not be negative"},
		{[]string{"--worker-lost-after", "soon"}, "invalid argument \"soon\" for \"--worker-lost-after\""},
	} {
		for _, sub := range []string{"server", "dev"} {
			args := append([]string{sub}, c.args...)
			if sub == "server" {
				args = append(args, "--database-url", "postgres://127.0.0.1:1/none")
			} else {
				args = append(args, "--data-dir", t.TempDir())
			}
			_, err := runHodei(t, args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("hodei %s: %v, want an error containing %q", strings.Join(args, " "), err, c.want)
			}
		}
	}
}
