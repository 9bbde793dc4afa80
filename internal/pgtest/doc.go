// Package pgtest gives tests a real PostgreSQL.
//
// TestMain calls Main, which starts one throwaway cluster per test binary: initdb into a
// temporary directory, then postgres in the foreground on 127.0.0.1 with a random free
// port and a Unix socket directory inside the temporary directory, durability off
// (fsync, full_page_writes, synchronous_commit) because the data is thrown away. When
// the tests run as root (CI does), initdb and postgres run as the postgres system user,
// or nobody if there is none. The postmaster is this process's child with a parent-death
// signal, so a crashed or killed test binary does not leave it running. At the end it
// is stopped with SIGQUIT (what pg_ctl stop -m immediate sends) and the directory removed.
//
// With HODEI_TEST_DATABASE_URL set, that server is used instead and nothing is started.
//
// Each test gets its own database: NewDatabase creates an empty one, NewStore copies a
// template database that is migrated once per test binary (CREATE DATABASE … TEMPLATE is
// much faster than migrating every time) and opens a postgres.Store on it. Databases are
// dropped WITH (FORCE) when the test ends.
//
// If PostgreSQL is not installed the test binary fails with instructions; it never skips.
package pgtest
