#!/usr/bin/env bash
# Make sure Debian's nats-server (the 2.9 line in bookworm) is installed: the tests
# check that Hodei works with it (internal/natstest.DebianServer). The nats-server of
# the version go.mod requires is built by the tests themselves from the module cache.
#
# Found: nothing to do. Missing, running as root with apt-get: install it.
# Missing otherwise: print the command to run and exit 1.
#
# Debian's package ships a systemd unit for its own server on port 4222; the tests
# never use it (they start their own on random loopback ports), and machines without
# systemd never start it.
set -euo pipefail

if [ -n "${HODEI_TEST_NATS_SERVER_29:-}" ]; then
	echo "ensure-nats: HODEI_TEST_NATS_SERVER_29 is set; the tests use $HODEI_TEST_NATS_SERVER_29"
	exit 0
fi

have() { [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1; }

if have; then
	echo "ensure-nats: using $(command -v nats-server || echo /usr/sbin/nats-server)"
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-nats: installing nats-server"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update </dev/null
	apt-get install -y --no-install-recommends nats-server </dev/null
	if have; then
		echo "ensure-nats: installed"
		exit 0
	fi
	echo "ensure-nats: apt-get installed nats-server but it is still missing" >&2
	exit 1
fi

cat >&2 <<'MSG'
ensure-nats: Debian's nats-server is not installed. The tests check Hodei against it
(the 2.9 line). Install it with:

    sudo apt-get install -y nats-server

(or set HODEI_TEST_NATS_SERVER_29 to a nats-server 2.9 binary), then run make test again.
MSG
exit 1
