package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// SagaReader reads a saga's row and its decoded history; *saga.Engine satisfies it.
// Both return an error matching store.ErrNotFound for an unknown saga.
type SagaReader interface {
	Get(ctx context.Context, id string) (*saga.Info, error)
	History(ctx context.Context, id string) ([]*saga.Event, error)
}

var _ SagaReader = (*saga.Engine)(nil)

// maxCategoryFilter bounds GetSagaHistoryRequest.categories (there are six categories).
const maxCategoryFilter = 16

// GetSagaHistory implements AdminService.GetSagaHistory.
func (s *AdminService) GetSagaHistory(ctx context.Context, req *connect.Request[hodeiv1.GetSagaHistoryRequest]) (*connect.Response[hodeiv1.GetSagaHistoryResponse], error) {
	id := req.Msg.GetSagaId()
	if err := validID("saga_id", id); err != nil {
		return nil, err
	}
	keep, err := categoryFilter(req.Msg.GetCategories())
	if err != nil {
		return nil, err
	}
	info, err := s.sagas.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("saga_id: no saga %q", id))
	}
	if err != nil {
		return nil, s.toConnect(fmt.Errorf("saga %s: %w", id, err))
	}
	hist, err := s.sagas.History(ctx, id)
	if err != nil {
		return nil, s.toConnect(fmt.Errorf("history of saga %s: %w", id, err))
	}
	res := &hodeiv1.GetSagaHistoryResponse{
		Saga: &hodeiv1.SagaSummary{Id: info.ID, Type: info.Type, State: string(info.State),
			CurrentStep: int32(info.CurrentStep), Error: info.Error,
			CreatedAt: timestamppb.New(info.CreatedAt), UpdatedAt: timestamppb.New(info.UpdatedAt)},
		Version: int32(info.Version),
		LastSeq: info.LastSeq,
		Events:  make([]*hodeiv1.SagaEvent, 0, len(hist)),
	}
	if !info.RunnableAt.IsZero() {
		res.RunnableAt = timestamppb.New(info.RunnableAt)
	}
	for _, ev := range hist {
		// The current step's name is the one its latest scheduling recorded.
		if ev.Type == saga.EventStepScheduled && ev.Data.Index == info.CurrentStep {
			res.Saga.CurrentStepName = ev.Step
		}
		if keep != nil && !keep[ev.Category()] {
			continue
		}
		pe, err := sagaEventToProto(ev)
		if err != nil {
			return nil, s.toConnect(fmt.Errorf("saga %s event %d: %w", id, ev.Seq, err))
		}
		res.Events = append(res.Events, pe)
	}
	return connect.NewResponse(res), nil
}

// categoryFilter checks the requested categories; nil means all.
func categoryFilter(cats []string) (map[saga.EventCategory]bool, error) {
	if len(cats) == 0 {
		return nil, nil
	}
	if len(cats) > maxCategoryFilter {
		return nil, invalidArg("categories", "has %d entries, the limit is %d", len(cats), maxCategoryFilter)
	}
	known := saga.Categories()
	keep := map[saga.EventCategory]bool{}
	for i, c := range cats {
		if !slices.Contains(known, saga.EventCategory(c)) {
			names := make([]string, len(known))
			for k, kc := range known {
				names[k] = string(kc)
			}
			return nil, invalidArg(fmt.Sprintf("categories[%d]", i), "%.40q is not one of %s",
				c, strings.Join(names, ", "))
		}
		keep[saga.EventCategory(c)] = true
	}
	return keep, nil
}

func sagaEventToProto(ev *saga.Event) (*hodeiv1.SagaEvent, error) {
	p, err := eventPayloadJSON(&ev.Data)
	if err != nil {
		return nil, err
	}
	return &hodeiv1.SagaEvent{Seq: ev.Seq, Time: timestamppb.New(ev.Time), Type: ev.Type,
		Category: string(ev.Category()), Step: ev.Step, Attempt: int32(ev.Attempt), Codec: ev.Codec,
		Payload: string(p)}, nil
}

// eventPayloadJSON renders decoded event data as a JSON object of the fields set, with
// the step output (or signal payload) inline when it is JSON (base64 otherwise).
func eventPayloadJSON(d *saga.EventData) ([]byte, error) {
	m := map[string]any{}
	if len(d.Output) > 0 {
		if json.Valid(d.Output) {
			m["output"] = json.RawMessage(d.Output)
		} else {
			m["output"] = d.Output
		}
	}
	if d.Error != "" {
		m["error"] = d.Error
	}
	if d.Final {
		m["final"] = true
	}
	if d.Name != "" {
		m["name"] = d.Name
	}
	if d.TimerID != "" {
		m["timer_id"] = d.TimerID
	}
	if !d.FireAt.IsZero() {
		m["fire_at"] = d.FireAt.UTC()
	}
	if !d.NotBefore.IsZero() {
		m["not_before"] = d.NotBefore.UTC()
	}
	if d.Seq != 0 {
		m["seq"] = d.Seq
	}
	if d.Index != 0 {
		m["index"] = d.Index
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return b, nil
}

// restSagaHistory serves GET /api/v1/admin/sagas/{saga_id}[?category=C&category=…].
func (s *AdminService) restSagaHistory(r *http.Request) (proto.Message, error) {
	res, err := s.GetSagaHistory(r.Context(), connect.NewRequest(&hodeiv1.GetSagaHistoryRequest{
		SagaId: r.PathValue("saga_id"), Categories: r.URL.Query()["category"]}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}
