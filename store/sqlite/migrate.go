package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded schema change.
type Migration struct {
	Version string // file name without ".sql", e.g. "0001_foundation"
	SQL     string
}

// Migrations returns the embedded migrations in the order they are applied. Their
// versions match the PostgreSQL driver's (same logical schema, SQLite dialect).
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("sqlite: read embedded migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("sqlite: read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: strings.TrimSuffix(e.Name(), ".sql"), SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// migrate applies the migrations db has not recorded in schema_migrations, each in its
// own BEGIN IMMEDIATE transaction (which also serialises concurrent openers of the
// same file), and returns the versions it applied.
func migrate(ctx context.Context, db *sql.DB) ([]string, error) {
	migs, err := Migrations()
	if err != nil {
		return nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer conn.Close()
	var applied []string
	for _, m := range migs {
		done, err := applyMigration(ctx, conn, m)
		if err != nil {
			return applied, err
		}
		if done {
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

func applyMigration(ctx context.Context, conn *sql.Conn, m Migration) (applied bool, err error) {
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return false, fmt.Errorf("sqlite: migration %s: begin: %w", m.Version, err)
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
		}
	}()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    TEXT    PRIMARY KEY,
		applied_at INTEGER NOT NULL) STRICT`); err != nil {
		return false, fmt.Errorf("sqlite: migration %s: create schema_migrations: %w", m.Version, err)
	}
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`,
		m.Version).Scan(&n); err != nil {
		return false, fmt.Errorf("sqlite: migration %s: check: %w", m.Version, err)
	}
	if n == 0 {
		if _, err := conn.ExecContext(ctx, m.SQL); err != nil {
			return false, fmt.Errorf("sqlite: migration %s: %w", m.Version, err)
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
			m.Version, time.Now().UnixNano()); err != nil {
			return false, fmt.Errorf("sqlite: migration %s: record: %w", m.Version, err)
		}
	}
	if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
		return false, fmt.Errorf("sqlite: migration %s: commit: %w", m.Version, err)
	}
	return n == 0, nil
}
