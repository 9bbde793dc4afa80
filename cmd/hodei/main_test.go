package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/hodei-jobs/hodei/internal/pgtest"
)

// TestMain starts one throwaway PostgreSQL for every test of the hodei command (or uses
// HODEI_TEST_DATABASE_URL). Tests of other subcommands share it: do not add another
// TestMain to this package.
func TestMain(m *testing.M) { pgtest.Main(m) }

// runHodei runs the hodei root command with args as a user would and returns its
// standard output and error.
func runHodei(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}
