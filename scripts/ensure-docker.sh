#!/usr/bin/env bash
# Make sure Debian's Docker Engine (dockerd, from the docker.io package) and a static
# busybox (busybox-static) are installed: the tests start their own dockerd with them
# (internal/dockertest) and build their test image FROM scratch with busybox inside.
# No registry is reachable from the test machines, so nothing is pulled.
#
# Found: nothing to do. Missing, running as root with apt-get: install them.
# Missing otherwise: print the command to run and exit 1.
#
# Debian's package ships a systemd unit for its own dockerd on /var/run/docker.sock;
# the tests never use it (each test binary starts one with its own data root, exec
# root and socket, no bridge and no iptables rules), and machines without systemd
# never start it.
set -euo pipefail

have_dockerd() { command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ]; }
# The dynamic busybox package also installs /bin/busybox; the test image is FROM scratch,
# so it needs the static one (internal/dockertest checks the ELF header too).
have_busybox() {
	if command -v dpkg-query >/dev/null 2>&1; then
		dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'
	else
		[ -x /bin/busybox ]
	fi
}

if [ -n "${HODEI_TEST_DOCKER_HOST:-}" ]; then
	echo "ensure-docker: HODEI_TEST_DOCKER_HOST is set; the tests use that engine"
	exit 0
fi

missing=()
have_dockerd || missing+=(docker.io)
have_busybox || missing+=(busybox-static)
if [ ${#missing[@]} -eq 0 ]; then
	echo "ensure-docker: using $(command -v dockerd || echo /usr/sbin/dockerd) and /bin/busybox"
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-docker: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update </dev/null
	apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
	if have_dockerd && have_busybox; then
		echo "ensure-docker: installed"
		exit 0
	fi
	echo "ensure-docker: apt-get installed ${missing[*]} but dockerd or a static /bin/busybox is still missing" >&2
	exit 1
fi

cat >&2 <<MSG
ensure-docker: ${missing[*]} not installed.
The provider tests start their own Docker Engine and build a test image from a static
busybox. Install them with:

    sudo apt-get install -y docker.io busybox-static

(or point the tests at an engine where they may create containers and images with
HODEI_TEST_DOCKER_HOST=unix:///path/to/docker.sock), then run make test again.
MSG
exit 1
