package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// Namespace limits (migration 0008_namespaces).

// Namespaces returns the namespace limits port.
func (s *Store) Namespaces() store.NamespaceStore { return namespaceStore{s} }

type namespaceStore struct{ s *Store }

// jobNamespace is the namespace of a job row of alias ("" or "j."): a job stored
// without one is in "default".
func jobNamespace(alias string) string {
	return `COALESCE(NULLIF(` + alias + `spec->>'namespace', ''), '` + domain.DefaultNamespace + `')`
}

// holdingStates are the job states that count against a namespace's limit.
const holdingStates = `('PROVISIONING', 'ASSIGNED', 'RUNNING')`

func (ns namespaceStore) SetLimit(ctx context.Context, name string, maxRunning int, at time.Time) error {
	if name == "" || maxRunning < 0 {
		return fmt.Errorf("postgres: set namespace limit: name %q, max running %d: want a name and a limit >= 0", name, maxRunning)
	}
	var err error
	if maxRunning == 0 {
		_, err = ns.s.q(ctx).Exec(ctx, `DELETE FROM namespace_limits WHERE namespace = $1`, name)
	} else {
		_, err = ns.s.q(ctx).Exec(ctx, `INSERT INTO namespace_limits (namespace, max_running, updated_at)
			VALUES ($1, $2, $3) ON CONFLICT (namespace) DO UPDATE SET max_running = $2, updated_at = $3`,
			name, maxRunning, at.UTC())
	}
	if err != nil {
		return fmt.Errorf("postgres: set limit of namespace %s: %w", name, err)
	}
	return nil
}

func (ns namespaceStore) Usage(ctx context.Context) ([]store.NamespaceUsage, error) {
	rows, err := ns.s.q(ctx).Query(ctx, `WITH counts AS (
			SELECT `+jobNamespace("")+` AS ns,
				count(*) FILTER (WHERE state IN `+holdingStates+`) AS running,
				count(*) FILTER (WHERE state = 'PENDING') AS pending
			FROM jobs GROUP BY 1),
		names AS (SELECT namespace AS ns FROM namespace_limits UNION SELECT ns FROM counts)
		SELECT n.ns, COALESCE(l.max_running, 0), COALESCE(c.running, 0), COALESCE(c.pending, 0)
		FROM names n LEFT JOIN namespace_limits l ON l.namespace = n.ns LEFT JOIN counts c ON c.ns = n.ns
		ORDER BY n.ns`)
	if err != nil {
		return nil, fmt.Errorf("postgres: namespace usage: %w", err)
	}
	defer rows.Close()
	var out []store.NamespaceUsage
	for rows.Next() {
		var u store.NamespaceUsage
		var maxRunning int32
		var running, pending int64
		if err := rows.Scan(&u.Name, &maxRunning, &running, &pending); err != nil {
			return nil, fmt.Errorf("postgres: namespace usage: %w", err)
		}
		u.MaxRunning, u.Running, u.Pending = int(maxRunning), int(running), int(pending)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: namespace usage: %w", err)
	}
	return out, nil
}

func (ss schedulingStore) NamespaceHeadroom(ctx context.Context) (map[string]int, error) {
	rows, err := ss.s.q(ctx).Query(ctx, `SELECT l.namespace, GREATEST(l.max_running - count(j.id), 0)
		FROM namespace_limits l LEFT JOIN jobs j
			ON `+jobNamespace("j.")+` = l.namespace AND j.state IN `+holdingStates+`
		GROUP BY l.namespace, l.max_running`)
	if err != nil {
		return nil, fmt.Errorf("postgres: namespace headroom: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			return nil, fmt.Errorf("postgres: namespace headroom: %w", err)
		}
		out[name] = int(n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: namespace headroom: %w", err)
	}
	return out, nil
}
