package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/store"
)

// NamespaceAdmin sets and reads the namespaces' limits on running jobs;
// store.NamespaceStore satisfies it.
type NamespaceAdmin interface {
	SetLimit(ctx context.Context, name string, maxRunning int, at time.Time) error
	Usage(ctx context.Context) ([]store.NamespaceUsage, error)
}

// MaxNamespaceRunning bounds SetNamespaceRequest.max_running.
const MaxNamespaceRunning = 1_000_000

func (s *AdminService) namespaces() (NamespaceAdmin, error) {
	if s.opts.Namespaces == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this server has no namespace store"))
	}
	return s.opts.Namespaces, nil
}

func namespaceToProto(u store.NamespaceUsage) *hodeiv1.Namespace {
	return &hodeiv1.Namespace{Name: u.Name, MaxRunning: int32(u.MaxRunning), Running: int32(u.Running), Pending: int32(u.Pending)}
}

// SetNamespace implements AdminService.SetNamespace.
func (s *AdminService) SetNamespace(ctx context.Context, req *connect.Request[hodeiv1.SetNamespaceRequest]) (*connect.Response[hodeiv1.SetNamespaceResponse], error) {
	ns, err := s.namespaces()
	if err != nil {
		return nil, err
	}
	m := req.Msg
	if err := domain.ValidateNamespace(m.GetName()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("name: %w", err))
	}
	if m.GetMaxRunning() < 0 || m.GetMaxRunning() > MaxNamespaceRunning {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("max_running: %d out of range [0, %d] (0: no limit)", m.GetMaxRunning(), MaxNamespaceRunning))
	}
	if err := ns.SetLimit(ctx, m.GetName(), int(m.GetMaxRunning()), time.Now()); err != nil {
		return nil, s.toConnect(err)
	}
	s.log.Info("namespace limit set", "namespace", m.GetName(), "max_running", m.GetMaxRunning())
	usage, err := ns.Usage(ctx)
	if err != nil {
		return nil, s.toConnect(err)
	}
	out := store.NamespaceUsage{Name: m.GetName(), MaxRunning: int(m.GetMaxRunning())}
	for _, u := range usage {
		if u.Name == m.GetName() {
			out = u
		}
	}
	return connect.NewResponse(&hodeiv1.SetNamespaceResponse{Namespace: namespaceToProto(out)}), nil
}

// ListNamespaces implements AdminService.ListNamespaces.
func (s *AdminService) ListNamespaces(ctx context.Context, _ *connect.Request[hodeiv1.ListNamespacesRequest]) (*connect.Response[hodeiv1.ListNamespacesResponse], error) {
	ns, err := s.namespaces()
	if err != nil {
		return nil, err
	}
	usage, err := ns.Usage(ctx)
	if err != nil {
		return nil, s.toConnect(err)
	}
	res := &hodeiv1.ListNamespacesResponse{}
	for _, u := range usage {
		res.Namespaces = append(res.Namespaces, namespaceToProto(u))
	}
	return connect.NewResponse(res), nil
}
