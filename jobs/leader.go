package jobs

// Leadership tells the Service whether this replica leads the platform
// (internal/leadership.Elector implements it). The leader runs the capacity scheduler
// and the cleanup scan; see "Leader" in doc.go. Implementations are safe for
// concurrent use.
type Leadership interface {
	// IsLeader reports whether this replica leads now.
	IsLeader() bool
	// Changed returns a channel closed at the next change of IsLeader.
	Changed() <-chan struct{}
}

// alwaysLeader is the Leadership of a Service without Config.Leader: one replica, or a
// test, that always leads.
type alwaysLeader struct{}

func (alwaysLeader) IsLeader() bool           { return true }
func (alwaysLeader) Changed() <-chan struct{} { return nil }
