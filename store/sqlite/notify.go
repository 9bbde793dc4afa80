package sqlite

import (
	"context"
	"sync/atomic"
)

// wake signals every Wakeups subscriber of this Store. It never blocks: each channel has
// capacity 1, so signals coalesce.
func (s *Store) wake() {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// wakeups implements OutboxStore.Wakeups. The channel (capacity 1) receives after
// commits of this Store that inserted, reaped or requeued rows. It does not hear other
// processes: the SQLite driver is for one process. It is closed when ctx ends or the
// Store closes.
func (s *Store) wakeups(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.subsMu.Lock()
	select {
	case <-s.closing:
		s.subsMu.Unlock()
		close(ch)
		return ch
	default:
	}
	s.subs[ch] = struct{}{}
	s.wg.Add(1)
	s.subsMu.Unlock()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closing:
		}
		s.subsMu.Lock()
		delete(s.subs, ch)
		close(ch)
		s.subsMu.Unlock()
	}()
	return ch
}

// storeMax raises v to n if n is larger.
func storeMax(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}
