package postgres

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
		return fmt.Errorf("postgres: leader lease %s: name is empty", op)
	case holder == "":
		return fmt.Errorf("postgres: leader lease %s %s: holder is empty", op, name)
	case !b.After(a):
		return fmt.Errorf("postgres: leader lease %s %s: expiry %s is not after %s", op, name, b, a)
	}
	return nil
}

// TryElect is one statement: an upsert that takes the row when it is free, expired or
// already holder's, and otherwise reads the row as it stands. A row inserted by a
// concurrent elector after the statement's snapshot is invisible to its read part; the
// statement is then run again (it sees the row the second time).
func (ls leaderStore) TryElect(ctx context.Context, name, holder string, now, expiresAt time.Time) (store.Lease, bool, error) {
	if err := checkLease("elect", name, holder, now, expiresAt); err != nil {
		return store.Lease{}, false, err
	}
	for range 3 {
		var (
			l       store.Lease
			elected bool
		)
		err := ls.s.q(ctx).QueryRow(ctx, `WITH up AS (
				INSERT INTO leader_leases AS l (name, holder, elected_at, expires_at) VALUES ($1, $2, $3, $4)
				ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,
					elected_at = EXCLUDED.elected_at, expires_at = EXCLUDED.expires_at
				WHERE l.expires_at <= EXCLUDED.elected_at OR l.holder = EXCLUDED.holder
				RETURNING name, holder, elected_at, expires_at)
			SELECT name, holder, elected_at, expires_at, true FROM up
			UNION ALL
			SELECT name, holder, elected_at, expires_at, false FROM leader_leases
			WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM up)`,
			name, holder, now, expiresAt).Scan(&l.Name, &l.Holder, &l.ElectedAt, &l.ExpiresAt, &elected)
		if errNoRows(err) {
			continue
		}
		if err != nil {
			return store.Lease{}, false, fmt.Errorf("postgres: elect leader of %s: %w", name, err)
		}
		l.ElectedAt, l.ExpiresAt = l.ElectedAt.UTC(), l.ExpiresAt.UTC()
		return l, elected, nil
	}
	return store.Lease{}, false, fmt.Errorf("postgres: elect leader of %s: lease row changing under the election", name)
}

func (ls leaderStore) Renew(ctx context.Context, name, holder string, electedAt, expiresAt time.Time) (store.Lease, error) {
	if err := checkLease("renew", name, holder, electedAt, expiresAt); err != nil {
		return store.Lease{}, err
	}
	l := store.Lease{}
	err := ls.s.q(ctx).QueryRow(ctx, `UPDATE leader_leases SET expires_at = $4
		WHERE name = $1 AND holder = $2 AND elected_at = $3
		RETURNING name, holder, elected_at, expires_at`,
		name, holder, electedAt, expiresAt).Scan(&l.Name, &l.Holder, &l.ElectedAt, &l.ExpiresAt)
	if errNoRows(err) {
		return store.Lease{}, fmt.Errorf("postgres: renew leader lease %s of %s: term %s is over: %w",
			name, holder, electedAt.UTC().Format(time.RFC3339Nano), store.ErrNotFound)
	}
	if err != nil {
		return store.Lease{}, fmt.Errorf("postgres: renew leader lease %s of %s: %w", name, holder, err)
	}
	l.ElectedAt, l.ExpiresAt = l.ElectedAt.UTC(), l.ExpiresAt.UTC()
	return l, nil
}

func (ls leaderStore) Resign(ctx context.Context, name, holder string, electedAt time.Time) (bool, error) {
	if name == "" || holder == "" {
		return false, errors.New("postgres: resign leader lease: name and holder are required")
	}
	tag, err := ls.s.q(ctx).Exec(ctx, `DELETE FROM leader_leases WHERE name = $1 AND holder = $2 AND elected_at = $3`,
		name, holder, electedAt)
	if err != nil {
		return false, fmt.Errorf("postgres: resign leader lease %s of %s: %w", name, holder, err)
	}
	return tag.RowsAffected() == 1, nil
}
