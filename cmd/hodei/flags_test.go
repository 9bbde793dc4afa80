package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// newFlagTestCmd builds a root with one subcommand "probe" whose env-bound flags are
// captured after the run.
func newFlagTestCmd(got *struct {
	url  string
	wait time.Duration
}) *cobra.Command {
	root := newRootCmd()
	probe := &cobra.Command{
		Use: "probe",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return requireFlags(cmd, "database-url")
		},
	}
	databaseURLFlag(probe, &got.url)
	probe.Flags().DurationVar(&got.wait, "wait", time.Second, "wait")
	bindEnv(probe, "wait", "HODEI_TEST_WAIT")
	root.AddCommand(probe)
	return root
}

func TestEnvDefaults(t *testing.T) {
	type vals = struct {
		url  string
		wait time.Duration
	}
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		want    vals
		wantErr string
	}{
		{"flag only", nil, []string{"--database-url", "postgres://flag"}, vals{"postgres://flag", time.Second}, ""},
		{"env only", map[string]string{envDatabaseURL: "postgres://env", "HODEI_TEST_WAIT": "3s"}, nil,
			vals{"postgres://env", 3 * time.Second}, ""},
		{"flag wins over env", map[string]string{envDatabaseURL: "postgres://env"},
			[]string{"--database-url", "postgres://flag"}, vals{"postgres://flag", time.Second}, ""},
		{"neither", nil, nil, vals{"", time.Second}, "--database-url is required (or set the environment variable HODEI_DATABASE_URL)"},
		{"bad env value names variable and flag", map[string]string{envDatabaseURL: "u", "HODEI_TEST_WAIT": "soon"}, nil,
			vals{"", time.Second}, "$HODEI_TEST_WAIT (for --wait)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envDatabaseURL, "")
			t.Setenv("HODEI_TEST_WAIT", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var got vals
			root := newFlagTestCmd(&got)
			root.SetArgs(append([]string{"probe"}, tc.args...))
			err := root.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("values = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHelpShowsEnvNotItsValue(t *testing.T) {
	t.Setenv(envDatabaseURL, "postgres://user:secret@db/hodei")
	out, err := runHodei(t, "migrate", "--help")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "$HODEI_DATABASE_URL") {
		t.Errorf("help does not mention the variable:\n%s", out)
	}
	if strings.Contains(out, "secret") {
		t.Errorf("help prints the variable's value:\n%s", out)
	}
}
