#!/bin/bash
# The cost of tracing: `hodei bench jobs` and `bench sagas` with tracing off and on
# (--trace-sink: every span sampled and exported over OTLP/HTTP, the workers' too, to a
# receiver in the bench process that decodes and counts them), interleaved in one run
# on one throwaway PostgreSQL cluster, so that both modes see the same machine and the
# same load; the order alternates each round (off,on then on,off). Prints one JSON line
# per run (with the load average before it), then the medians of each mode and on/off.
# Needs root (the cluster runs as the postgres user), PostgreSQL's binaries and jq.
# Usage: scripts/bench-tracing.sh [WORKDIR] [ROUNDS] [JOBS] [SAGAS]
set -u
B=${1:-/tmp/hodei-bench-tracing}
ROUNDS=${2:-3}
JOBS=${3:-300}
SAGAS=${4:-2000}
mkdir -p "$B"
cd "$(dirname "$0")/.." || exit 1
CGO_ENABLED=0 go build -o "$B/bin/hodei" ./cmd/hodei && CGO_ENABLED=0 go build -o "$B/bin/hodei-agent" ./cmd/hodei-agent || exit 1
BIN=$B/bin/hodei
initdb_dir=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
start_pg() { # dir port
	rm -rf "$1" && mkdir -p "$1" && chown postgres "$1"
	su postgres -s /bin/sh -c "$initdb_dir/initdb -D $1/data -U postgres -A trust >/dev/null && $initdb_dir/pg_ctl -D $1/data -o '-p $2 -k $1 -c listen_addresses=127.0.0.1 -c max_connections=300' -l $1/log -w start >/dev/null"
}
stop_pg() { su postgres -s /bin/sh -c "$initdb_dir/pg_ctl -D $1/data -m fast stop >/dev/null"; }
start_pg "$B/pg" 55710 || exit 1
trap 'stop_pg "$B/pg"' EXIT
P="psql -h 127.0.0.1 -p 55710 -U postgres -q"
U=postgres://postgres@127.0.0.1:55710
load() { cut -d' ' -f1 /proc/loadavg; }
OUT=$B/runs.jsonl
: >"$OUT"
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $JOBS jobs, $SAGAS sagas, $ROUNDS rounds"
run() { # bench mode round
	local flags=() spans=0 l res
	[ "$2" = on ] && flags=(--trace-sink)
	$P -c "DROP DATABASE IF EXISTS b" -c "CREATE DATABASE b"
	l=$(load)
	case $1 in
	jobs) res=$("$BIN" bench jobs --database-url $U/b --jobs "$JOBS" -o json "${flags[@]}" 2>"$B/err" | tail -1) ;;
	sagas) res=$("$BIN" bench sagas --database-url $U/b --sagas "$SAGAS" -o json "${flags[@]}" 2>"$B/err" | tail -1) ;;
	esac
	spans=$(sed -n 's/^trace sink: \([0-9]*\) spans received$/\1/p' "$B/err")
	if [ -z "$res" ]; then
		echo "$1 $2 round $3 failed:" >&2
		tail -5 "$B/err" >&2
		return
	fi
	echo "$res" | jq -c --arg b "$1" --arg m "$2" --argjson r "$3" --argjson l "$l" --argjson s "${spans:-0}" \
		'{bench: $b, tracing: $m, round: $r, load1: $l, spans: $s} + .' | tee -a "$OUT"
}
for i in $(seq "$ROUNDS"); do
	order="off on"
	[ $((i % 2)) -eq 0 ] && order="on off"
	for bench in jobs sagas; do
		for mode in $order; do
			run "$bench" "$mode" "$i"
		done
	done
done
echo "medians (on/off: above 1 is more for tracing on):"
jq -s -r '
	def med: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
	def r2: if . == null then "-" else (. * 100 | round / 100 | tostring) end;
	def cmp($b; $k; $what):
		([.[] | select(.bench == $b and .tracing == "off") | .[$k]] | med) as $off
		| ([.[] | select(.bench == $b and .tracing == "on") | .[$k]] | med) as $on
		| "\($b) \($what): off \($off | r2), on \($on | r2), on/off \(if $off and $on and $off != 0 then ($on / $off | r2) else "-" end)";
	cmp("jobs"; "throughput_per_s"; "jobs/s"),
	cmp("jobs"; "start_latency_p50_ms"; "submit→RUNNING p50 ms"),
	cmp("jobs"; "start_latency_p95_ms"; "submit→RUNNING p95 ms"),
	cmp("jobs"; "end_latency_p50_ms"; "submit→end p50 ms"),
	cmp("jobs"; "submit_p50_ms"; "SubmitJob p50 ms"),
	cmp("jobs"; "spans"; "spans exported"),
	cmp("sagas"; "throughput_per_s"; "sagas/s"),
	cmp("sagas"; "append_p50_ms"; "append p50 ms"),
	cmp("sagas"; "append_p99_ms"; "append p99 ms"),
	cmp("sagas"; "spans"; "spans exported"),
	"load1 during the runs: \([.[] | .load1] | min) to \([.[] | .load1] | max)"
' "$OUT"
