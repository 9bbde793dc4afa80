#!/bin/bash
# Jobs per second with 1 and with 3 `hodei server` replicas on one throwaway PostgreSQL
# and a 3-node NATS cluster (nats-server of go.mod's version, built into the user's
# cache as internal/natstest does), alternating, RUNS times each; one JSON line per run
# from `hodei bench jobs --server` against the first replica (the others share the work:
# sagas, relays, their own workers). Needs root (the cluster runs as the postgres user)
# and PostgreSQL's binaries. Everything listens on 127.0.0.1.
# Usage: scripts/bench-replicas.sh [WORKDIR] [RUNS] [JOBS]
set -u
B=${1:-/tmp/hodei-bench-replicas}
RUNS=${2:-3}
JOBS=${3:-300}
cd "$(dirname "$0")/.."
mkdir -p "$B"
go build -o "$B/hodei" ./cmd/hodei || exit 1
ver=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
NATS=${XDG_CACHE_HOME:-$HOME/.cache}/hodei/natstest/$ver/nats-server
[ -x "$NATS" ] || { mkdir -p "$(dirname "$NATS")" && go build -o "$NATS" github.com/nats-io/nats-server/v2; } || exit 1
initdb_dir=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
rm -rf "$B/pg" && mkdir -p "$B/pg" && chown postgres "$B/pg"
su postgres -s /bin/sh -c "$initdb_dir/initdb -D $B/pg/data -U postgres -A trust >/dev/null && $initdb_dir/pg_ctl -D $B/pg/data -o '-p 56710 -k $B/pg -c listen_addresses=127.0.0.1 -c max_connections=300' -l $B/pg/log -w start >/dev/null" || exit 1
cleanup() {
	stop_nats
	su postgres -s /bin/sh -c "$initdb_dir/pg_ctl -D $B/pg/data -m fast stop >/dev/null"
}
trap cleanup EXIT
npids=()
start_nats() { # a fresh cluster (empty stores) for every run
	npids=()
	for i in 1 2 3; do
		rm -rf "$B/n$i" && mkdir -p "$B/n$i"
		routes=""
		for j in 1 2 3; do [ "$j" != "$i" ] && routes="$routes${routes:+, }\"nats-route://127.0.0.1:5672$j\""; done
		cat >"$B/n$i/nats.conf" <<-CONF
		server_name: n$i
		listen: "127.0.0.1:5671$i"
		jetstream { store_dir: "$B/n$i/js" }
		cluster { name: bench, listen: "127.0.0.1:5672$i", routes: [$routes] }
		CONF
		"$NATS" -c "$B/n$i/nats.conf" >"$B/n$i/log" 2>&1 &
		npids+=($!)
	done
}
stop_nats() {
	for p in "${npids[@]}"; do kill "$p" 2>/dev/null; done
	wait "${npids[@]}" 2>/dev/null
}
NATSURL=nats://127.0.0.1:56711,nats://127.0.0.1:56712,nats://127.0.0.1:56713
P="psql -h 127.0.0.1 -p 56710 -U postgres -q"
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for run in $(seq "$RUNS"); do
	for n in 1 3; do
		$P -c "DROP DATABASE IF EXISTS br WITH (FORCE)" -c "CREATE DATABASE br"
		start_nats
		sleep 3
		rp=()
		for i in $(seq "$n"); do
			rm -rf "$B/r$i"
			"$B/hodei" server --database-url postgres://postgres@127.0.0.1:56710/br --listen 127.0.0.1:5673$i \
				--data-dir "$B/r$i" --nats-url "$NATSURL" --log-level error >"$B/r$i.log" 2>&1 &
			rp+=($!)
		done
		for i in $(seq "$n"); do
			for _ in $(seq 600); do curl -sf "http://127.0.0.1:5673$i/readyz" >/dev/null && break; sleep 0.1; done
		done
		echo "load $(load) replicas $n run $run $("$B/hodei" bench jobs --server http://127.0.0.1:56731 --jobs "$JOBS" -o json 2>/dev/null | tail -1)"
		for p in "${rp[@]}"; do kill "$p"; done
		wait "${rp[@]}" 2>/dev/null
		stop_nats
	done
done
