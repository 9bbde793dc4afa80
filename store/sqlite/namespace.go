package sqlite

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
	return `COALESCE(NULLIF(json_extract(` + alias + `spec, '$.namespace'), ''), '` + domain.DefaultNamespace + `')`
}

// holdingStates are the job states that count against a namespace's limit.
const holdingStates = `('PROVISIONING', 'ASSIGNED', 'RUNNING')`

func (ns namespaceStore) SetLimit(ctx context.Context, name string, maxRunning int, at time.Time) error {
	if name == "" || maxRunning < 0 {
		return fmt.Errorf("sqlite: set namespace limit: name %q, max running %d: want a name and a limit >= 0", name, maxRunning)
	}
	err := ns.s.write(ctx, func(ctx context.Context, q querier) error {
		if maxRunning == 0 {
			_, err := q.ExecContext(ctx, `DELETE FROM namespace_limits WHERE namespace = ?`, name)
			return err
		}
		_, err := q.ExecContext(ctx, `INSERT INTO namespace_limits (namespace, max_running, updated_at)
			VALUES (?1, ?2, ?3) ON CONFLICT (namespace) DO UPDATE SET max_running = ?2, updated_at = ?3`,
			name, maxRunning, nanos(at))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: set limit of namespace %s: %w", name, err)
	}
	return nil
}

func (ns namespaceStore) Usage(ctx context.Context) ([]store.NamespaceUsage, error) {
	rows, err := ns.s.q(ctx).QueryContext(ctx, `WITH counts AS (
			SELECT `+jobNamespace("")+` AS ns,
				SUM(state IN `+holdingStates+`) AS running,
				SUM(state = 'PENDING') AS pending
			FROM jobs GROUP BY 1),
		names AS (SELECT namespace AS ns FROM namespace_limits UNION SELECT ns FROM counts)
		SELECT n.ns, COALESCE(l.max_running, 0), COALESCE(c.running, 0), COALESCE(c.pending, 0)
		FROM names n LEFT JOIN namespace_limits l ON l.namespace = n.ns LEFT JOIN counts c ON c.ns = n.ns
		ORDER BY n.ns`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: namespace usage: %w", err)
	}
	defer rows.Close()
	var out []store.NamespaceUsage
	for rows.Next() {
		var u store.NamespaceUsage
		if err := rows.Scan(&u.Name, &u.MaxRunning, &u.Running, &u.Pending); err != nil {
			return nil, fmt.Errorf("sqlite: namespace usage: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: namespace usage: %w", err)
	}
	return out, nil
}

func (ss schedulingStore) NamespaceHeadroom(ctx context.Context) (map[string]int, error) {
	rows, err := ss.s.q(ctx).QueryContext(ctx, `SELECT l.namespace, MAX(l.max_running - count(j.id), 0)
		FROM namespace_limits l LEFT JOIN jobs j
			ON `+jobNamespace("j.")+` = l.namespace AND j.state IN `+holdingStates+`
		GROUP BY l.namespace, l.max_running`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: namespace headroom: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return nil, fmt.Errorf("sqlite: namespace headroom: %w", err)
		}
		out[name] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: namespace headroom: %w", err)
	}
	return out, nil
}
