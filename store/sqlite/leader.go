package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// Leader leases (migration 0004_leader).

// Leader returns the leader lease port.
func (s *Store) Leader() store.LeaderStore { return leaderStore{s} }

type leaderStore struct{ s *Store }

func checkLease(op, name, holder string, a, b time.Time) error {
	switch {
	case name == "":
		return fmt.Errorf("sqlite: leader lease %s: name is empty", op)
	case holder == "":
		return fmt.Errorf("sqlite: leader lease %s %s: holder is empty", op, name)
	case !b.After(a):
		return fmt.Errorf("sqlite: leader lease %s %s: expiry %s is not after %s", op, name, b, a)
	}
	return nil
}

func scanLease(row interface{ Scan(...any) error }) (store.Lease, error) {
	var (
		l          store.Lease
		elec, expi int64
	)
	if err := row.Scan(&l.Name, &l.Holder, &elec, &expi); err != nil {
		return store.Lease{}, err
	}
	l.ElectedAt, l.ExpiresAt = time.Unix(0, elec).UTC(), time.Unix(0, expi).UTC()
	return l, nil
}

// TryElect runs on the writer connection: an upsert that takes the row when it is
// free, expired or already holder's; when it took nothing, the row is read as it
// stands (no other writer can change it in between).
func (ls leaderStore) TryElect(ctx context.Context, name, holder string, now, expiresAt time.Time) (store.Lease, bool, error) {
	if err := checkLease("elect", name, holder, now, expiresAt); err != nil {
		return store.Lease{}, false, err
	}
	var (
		l       store.Lease
		elected bool
	)
	err := ls.s.write(ctx, func(ctx context.Context, q querier) error {
		var err error
		l, err = scanLease(q.QueryRowContext(ctx, `INSERT INTO leader_leases AS l (name, holder, elected_at, expires_at)
			VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
				elected_at = excluded.elected_at, expires_at = excluded.expires_at
			WHERE l.expires_at <= excluded.elected_at OR l.holder = excluded.holder
			RETURNING name, holder, elected_at, expires_at`, name, holder, nanos(now), nanos(expiresAt)))
		if err == nil {
			elected = true
			return nil
		}
		if !noRows(err) {
			return err
		}
		l, err = scanLease(q.QueryRowContext(ctx, `SELECT name, holder, elected_at, expires_at
			FROM leader_leases WHERE name = ?`, name))
		return err
	})
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("sqlite: elect leader of %s: %w", name, err)
	}
	return l, elected, nil
}

func (ls leaderStore) Renew(ctx context.Context, name, holder string, electedAt, expiresAt time.Time) (store.Lease, error) {
	if err := checkLease("renew", name, holder, electedAt, expiresAt); err != nil {
		return store.Lease{}, err
	}
	var l store.Lease
	err := ls.s.write(ctx, func(ctx context.Context, q querier) error {
		var err error
		l, err = scanLease(q.QueryRowContext(ctx, `UPDATE leader_leases SET expires_at = ?
			WHERE name = ? AND holder = ? AND elected_at = ?
			RETURNING name, holder, elected_at, expires_at`, nanos(expiresAt), name, holder, nanos(electedAt)))
		return err
	})
	if noRows(err) {
		return store.Lease{}, fmt.Errorf("sqlite: renew leader lease %s of %s: term %s is over: %w",
			name, holder, electedAt.UTC().Format(time.RFC3339Nano), store.ErrNotFound)
	}
	if err != nil {
		return store.Lease{}, fmt.Errorf("sqlite: renew leader lease %s of %s: %w", name, holder, err)
	}
	return l, nil
}

func (ls leaderStore) Resign(ctx context.Context, name, holder string, electedAt time.Time) (bool, error) {
	if name == "" || holder == "" {
		return false, errors.New("sqlite: resign leader lease: name and holder are required")
	}
	var n int64
	err := ls.s.write(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `DELETE FROM leader_leases WHERE name = ? AND holder = ? AND elected_at = ?`,
			name, holder, nanos(electedAt))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlite: resign leader lease %s of %s: %w", name, holder, err)
	}
	return n == 1, nil
}
