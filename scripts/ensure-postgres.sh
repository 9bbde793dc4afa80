#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, postgres) are installed, because the
# tests start their own throwaway clusters with them (internal/pgtest).
#
# Found on PATH or under /usr/lib/postgresql/*/bin: nothing to do.
# Missing, running as root with apt-get: install Debian's postgresql package.
# Missing otherwise: print the one command to run and exit 1.
#
# Debian's package may create and start a cluster on port 5432; the tests do not use
# it (each test binary starts its own on a random port), so that is harmless.
set -euo pipefail

find_initdb() {
	if command -v initdb >/dev/null 2>&1; then
		command -v initdb
		return 0
	fi
	local f
	for f in /usr/lib/postgresql/*/bin/initdb; do
		if [ -x "$f" ]; then
			echo "$f"
			return 0
		fi
	done
	return 1
}

if [ -n "${HODEI_TEST_DATABASE_URL:-}" ]; then
	echo "ensure-postgres: HODEI_TEST_DATABASE_URL is set; the tests use that server"
	exit 0
fi

if found=$(find_initdb); then
	echo "ensure-postgres: using $found"
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-postgres: PostgreSQL not found; installing Debian's postgresql package"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update </dev/null
	apt-get install -y --no-install-recommends postgresql </dev/null
	if found=$(find_initdb); then
		echo "ensure-postgres: installed, using $found"
		exit 0
	fi
	echo "ensure-postgres: apt-get installed postgresql but no initdb was found" >&2
	exit 1
fi

cat >&2 <<'MSG'
ensure-postgres: PostgreSQL's server binaries (initdb, postgres) are not installed.
The tests start their own throwaway PostgreSQL and need them. Install them with:

    sudo apt-get install -y postgresql

(or put a directory holding initdb and postgres on PATH, or point the tests at a running
server with HODEI_TEST_DATABASE_URL=postgres://user:pass@host:port/db), then run make test again.
MSG
exit 1
