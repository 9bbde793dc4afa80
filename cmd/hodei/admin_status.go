package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/api"
)

// adminStatusPath is the admin REST route `hodei admin status` reads.
const adminStatusPath = "/api/v1/admin/status"

func newAdminStatusCmd() *cobra.Command {
	var (
		f      adminFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show which replica answers, whether it leads, and which replica leads",
		Long: `Show the server replica that answers (its id), whether it leads, and which replica
leads. The replicas on one PostgreSQL database elect one leader (a lease renewed every
third of --leader-ttl); the leader runs the scheduler and the cleanup scan. A replica
started with hodei dev (SQLite) always leads.`,
		Example: `  hodei admin status
  hodei admin status --server http://10.0.0.2:7070 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			st, err := f.status(cmd)
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			writeReplicaStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	f.define(cmd)
	outputFlag(cmd, &output)
	return cmd
}

// status reads GET /api/v1/admin/status.
func (f *adminFlags) status(cmd *cobra.Command) (*api.ReplicaStatus, error) {
	c, err := newAPIClient(cmd, f.server)
	if err != nil {
		return nil, err
	}
	if f.token != "" {
		c.token = f.token
	}
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, c.baseURL+adminStatusPath, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, c.explain(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", adminStatusPath, err)
	}
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		switch res.StatusCode {
		case http.StatusUnauthorized:
			return nil, fmt.Errorf("the server refused the admin token: %s (set --admin-token or %s)", msg, envAdminToken)
		case http.StatusForbidden:
			return nil, fmt.Errorf("not allowed: %s", msg)
		case http.StatusNotFound:
			return nil, fmt.Errorf("the server at %s has no %s (an older version?)", c.baseURL, adminStatusPath)
		}
		return nil, fmt.Errorf("%s %s: %s", adminStatusPath, res.Status, msg)
	}
	var st api.ReplicaStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("decode %s: %w", adminStatusPath, err)
	}
	return &st, nil
}

func writeReplicaStatus(w io.Writer, st *api.ReplicaStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	leading, leader := "no", st.Leader
	if st.Leading {
		leading = "yes"
	}
	if leader == "" {
		leader = "(none known)"
	} else if !st.LeaderUntil.IsZero() {
		leader += "  (lease until " + st.LeaderUntil.Local().Format(time.RFC3339) + ")"
	}
	fmt.Fprintf(tw, "replica\t%s\n", st.ID)
	fmt.Fprintf(tw, "leading\t%s\n", leading)
	fmt.Fprintf(tw, "leader\t%s\n", leader)
	tw.Flush()
}
