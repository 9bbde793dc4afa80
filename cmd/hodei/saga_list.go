package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

func newSagaListCmd() *cobra.Command {
	var (
		f               adminFlags
		output, jobID   string
		sagaType, state string
		unchangedFor    time.Duration
		limit           int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sagas by job, type, state, or time since their last change",
		Long: "List sagas through the server's admin API (so it works against `hodei dev` as " +
			"well as `hodei server`): those of one job (--job), or those of a type (--type " +
			"execution, provisioning, timeout, cancellation, recovery), in a state (--state " +
			"RUNNING, WAITING, COMPENSATING, COMPLETED, FAILED, COMPENSATED, " +
			"COMPENSATION_FAILED, CANCELLED), unchanged for longer than --unchanged-for, least " +
			"recently changed first. `hodei saga show ID` prints one saga's history.",
		Example: `  hodei saga list --state WAITING --unchanged-for 10m
  hodei saga list --job 0193… -o json
  hodei saga list --type provisioning --state FAILED --limit 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if jobID != "" && (sagaType != "" || state != "" || unchangedFor != 0) {
				return errors.New("--job: not with --type, --state or --unchanged-for")
			}
			if unchangedFor < 0 {
				return fmt.Errorf("--unchanged-for: must not be negative, got %s", unchangedFor)
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			var sagas []*hodeiv1.SagaSummary
			if jobID != "" {
				res, err := ac.ListJobSagas(cmd.Context(), connect.NewRequest(&hodeiv1.ListJobSagasRequest{JobId: jobID}))
				if err != nil {
					return explainAdmin(c, err)
				}
				sagas = res.Msg.GetSagas()
			} else {
				req := &hodeiv1.ListSagasRequest{Type: sagaType, State: state, Limit: int32(limit)}
				if unchangedFor > 0 {
					req.UnchangedFor = durationpb.New(unchangedFor)
				}
				res, err := ac.ListSagas(cmd.Context(), connect.NewRequest(req))
				if err != nil {
					return explainAdmin(c, err)
				}
				sagas = res.Msg.GetSagas()
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeProtoJSON(out, &hodeiv1.ListSagasResponse{Sagas: sagas})
			}
			writeSagaList(out, sagas)
			return nil
		},
	}
	f.define(cmd)
	outputFlag(cmd, &output)
	fl := cmd.Flags()
	fl.StringVar(&jobID, "job", "", "the sagas of this job")
	fl.StringVar(&sagaType, "type", "", "only sagas of this type")
	fl.StringVar(&state, "state", "", "only sagas in this state")
	fl.DurationVar(&unchangedFor, "unchanged-for", 0, "only sagas whose last change is older than this (e.g. 10m: stuck WAITING sagas)")
	fl.IntVar(&limit, "limit", 100, "at most this many sagas (at most 1000)")
	return cmd
}

// writeSagaList prints sagas as a table with the time since their last change.
func writeSagaList(w io.Writer, sagas []*hodeiv1.SagaSummary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SAGA\tTYPE\tSTATE\tSTEP\tUNCHANGED FOR\tERROR")
	for _, s := range sagas {
		step := fmt.Sprint(s.GetCurrentStep())
		if s.GetCurrentStepName() != "" {
			step += " (" + s.GetCurrentStepName() + ")"
		}
		since := "-"
		if u := s.GetUpdatedAt(); u != nil {
			since = time.Since(u.AsTime()).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.GetId(), s.GetType(), s.GetState(), step, since, shorten(oneLine(s.GetError()), 60))
	}
	tw.Flush()
}
