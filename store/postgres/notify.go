package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-jobs/hodei/internal/backoff"
)

// Names used by the outbox wake-up path.
const (
	// NotifyChannel is the PostgreSQL channel relays LISTEN on.
	NotifyChannel = "hodei_outbox"
	// ListenerApplicationName is the application_name of Wakeups' listener connections
	// (visible in pg_stat_activity; tests terminate them to simulate a lost connection).
	ListenerApplicationName = "hodei-outbox-listener"
)

// wake signals that outbox rows may be available: every in-process Wakeups subscriber at
// once, and other processes through one coalesced NOTIFY sent by the notifier goroutine.
// It never blocks.
func (s *Store) wake() {
	s.signalLocal()
	if s.cfg.disableCommitNotify {
		return
	}
	select {
	case s.notifyReq <- struct{}{}:
	default: // a NOTIFY is already due: this request rides on it
	}
}

func (s *Store) signalLocal() {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// notifier sends NOTIFY hodei_outbox through the pool, outside any user transaction, at
// most once per NotifyInterval however many commits asked. A per-row trigger would make
// every inserting transaction take PostgreSQL's global notify lock at commit, which
// serialises commits; here at most one NOTIFY transaction per interval competes for it.
func (s *Store) notifier() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.closing
		cancel()
	}()
	for {
		select {
		case <-s.closing:
			return
		case <-s.notifyReq:
		}
		// Errors are dropped on purpose: relays also poll, and a lost NOTIFY only delays.
		_, _ = s.pool.Exec(ctx, `SELECT pg_notify($1, '')`, NotifyChannel)
		if s.cfg.NotifyInterval > 0 {
			t := time.NewTimer(s.cfg.NotifyInterval)
			select {
			case <-s.closing:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// wakeups implements OutboxStore.Wakeups. The returned channel (capacity 1, so
// signals coalesce) receives after local commits that inserted rows, and on every
// NOTIFY hodei_outbox received by a dedicated listener connection (not from the pool).
// When the listener loses its connection it reconnects with exponential backoff and
// then sends one wake-up, because rows may have arrived while it was deaf. The channel
// is closed when ctx ends or the Store closes.
func (s *Store) wakeups(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.subsMu.Lock()
	s.subs[ch] = struct{}{}
	s.subsMu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		defer func() {
			s.subsMu.Lock()
			delete(s.subs, ch)
			close(ch)
			s.subsMu.Unlock()
		}()
		go func() {
			select {
			case <-s.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		s.listen(ctx, ch)
	}()
	return ch
}

func (s *Store) listen(ctx context.Context, ch chan struct{}) {
	signal := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	pace := backoff.Pacer{Base: 50 * time.Millisecond, Max: s.cfg.ListenerBackoffMax}
	first := true
	deaf := false // the last attempt failed (logged once until the listener is back)
	log := s.cfg.Logger.With("component", "postgres.listener")
	for ctx.Err() == nil {
		conn, err := s.connectListener(ctx)
		if err == nil {
			pace.Reset()
			if !first {
				signal() // rows may have been inserted while the listener was deaf
			}
			if deaf {
				log.Info("outbox listener reconnected")
				deaf = false
			}
			first = false
			err = waitNotifications(ctx, conn, signal)
			_ = conn.Close(context.Background())
		}
		if ctx.Err() != nil {
			return
		}
		first = false
		wait := pace.Next()
		if !deaf {
			// Wake-ups wait for the relay's poll until the listener is back.
			log.Warn("outbox listener lost its connection; reconnecting", "err", err, "retry_in", wait)
			deaf = true
		} else {
			log.Debug("outbox listener reconnect failed", "err", err, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *Store) connectListener(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = ListenerApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

func waitNotifications(ctx context.Context, conn *pgx.Conn, signal func()) error {
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		signal()
	}
}
