#!/bin/bash
# Runs Hodei's benchmarks beside the peers' (River, Temporal) on throwaway PostgreSQL
# clusters with default durability, three times each, and prints one JSON line per run.
# Needs root (clusters run as the postgres user), PostgreSQL's binaries, and the peers
# in ../shared/peers (built here into $B). Usage: scripts/bench-vs-peers.sh [WORKDIR]
set -u
B=${1:-/tmp/hodei-bench-vs-peers}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${HODEI_PEERS:-$ROOT/../shared/peers}
mkdir -p "$B"
go build -o "$B/hodei" "$ROOT/cmd/hodei" || exit 1
(cd "$PEERS/river" && go build -o "$B/riverpeer" .) || exit 1
(cd "$PEERS/temporal" && go build -o "$B/temporalpeer" .) || exit 1
initdb_dir=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
start_pg() { # dir port
	rm -rf "$1" && mkdir -p "$1" && chown postgres "$1"
	su postgres -s /bin/sh -c "$initdb_dir/initdb -D $1/data -U postgres -A trust >/dev/null && $initdb_dir/pg_ctl -D $1/data -o '-p $2 -k $1 -c listen_addresses=127.0.0.1 -c max_connections=300' -l $1/log -w start >/dev/null"
}
stop_pg() { su postgres -s /bin/sh -c "$initdb_dir/pg_ctl -D $1/data -m fast stop >/dev/null"; }
start_pg "$B/pg1" 55600
start_pg "$B/pg2" 55440 # Temporal drops and re-creates its databases: its own cluster
trap 'stop_pg "$B/pg1"; stop_pg "$B/pg2"' EXIT
P="psql -h 127.0.0.1 -p 55600 -U postgres -q"
U=postgres://postgres@127.0.0.1:55600
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for i in 1 2 3; do
	$P -c "DROP DATABASE IF EXISTS ob" -c "CREATE DATABASE ob" -c "DROP DATABASE IF EXISTS rv" -c "CREATE DATABASE rv"
	echo "load $(load) outbox $i $("$B/hodei" bench outbox --database-url $U/ob -o json)"
	echo "load $(load) river $i $("$B/riverpeer" -database-url $U/rv -jobs 100000)"
done
for i in 1 2 3; do
	$P -c "DROP DATABASE IF EXISTS sg" -c "CREATE DATABASE sg"
	echo "load $(load) sagas $i $("$B/hodei" bench sagas --database-url $U/sg -o json)"
	echo "load $(load) temporal $i $("$B/temporalpeer" -pg-port 55440 -workflows 500 2>/dev/null | tail -1)"
done
for i in 1 2 3; do
	$P -c "DROP DATABASE IF EXISTS jb" -c "CREATE DATABASE jb"
	echo "load $(load) jobs $i $("$B/hodei" bench jobs --database-url $U/jb --jobs 300 -o json 2>/dev/null | tail -1)"
done
for i in 1 2 3; do
	rm -f "$B"/ob-sqlite.db*
	echo "load $(load) outbox-sqlite $i $("$B/hodei" bench outbox --driver sqlite --sqlite-path "$B/ob-sqlite.db" -o json)"
done
