#!/bin/bash
# Runs `hodei bench jobs`, `bench sagas` and `bench recovery` with two hodei binaries
# (before and after a change), interleaved, three times each, on one throwaway
# PostgreSQL cluster with default durability, and prints one JSON line per run, so that
# both binaries see the same machine and the same load. Needs root (the cluster runs as
# the postgres user) and PostgreSQL's binaries.
# Usage: scripts/bench-before-after.sh BEFORE_BIN AFTER_BIN [WORKDIR] [RUNS]
set -u
BEFORE=$1
AFTER=$2
B=${3:-/tmp/hodei-bench-before-after}
RUNS=${4:-3}
mkdir -p "$B"
initdb_dir=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
start_pg() { # dir port
	rm -rf "$1" && mkdir -p "$1" && chown postgres "$1"
	su postgres -s /bin/sh -c "$initdb_dir/initdb -D $1/data -U postgres -A trust >/dev/null && $initdb_dir/pg_ctl -D $1/data -o '-p $2 -k $1 -c listen_addresses=127.0.0.1 -c max_connections=300' -l $1/log -w start >/dev/null"
}
stop_pg() { su postgres -s /bin/sh -c "$initdb_dir/pg_ctl -D $1/data -m fast stop >/dev/null"; }
start_pg "$B/pg" 55700
trap 'stop_pg "$B/pg"' EXIT
P="psql -h 127.0.0.1 -p 55700 -U postgres -q"
U=postgres://postgres@127.0.0.1:55700
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for i in $(seq "$RUNS"); do
	for which in before after; do
		bin=$BEFORE
		[ "$which" = after ] && bin=$AFTER
		$P -c "DROP DATABASE IF EXISTS jb" -c "CREATE DATABASE jb" -c "DROP DATABASE IF EXISTS sg" -c "CREATE DATABASE sg" \
			-c "DROP DATABASE IF EXISTS rc" -c "CREATE DATABASE rc"
		echo "load $(load) $which jobs $i $("$bin" bench jobs --database-url $U/jb --jobs 300 -o json 2>/dev/null | tail -1)"
		echo "load $(load) $which jobs-1 $i $("$bin" bench jobs --database-url $U/jb --jobs 100 --concurrency 1 -o json 2>/dev/null | tail -1)"
		echo "load $(load) $which sagas $i $("$bin" bench sagas --database-url $U/sg -o json 2>/dev/null | tail -1)"
		echo "load $(load) $which recovery $i $("$bin" bench recovery --database-url $U/rc -o json 2>/dev/null | tail -1)"
	done
done
