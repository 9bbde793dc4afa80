#!/usr/bin/env bash
# Make sure promtool is installed: the e2e test of deploy/observability runs
# `promtool check rules` on the alert rules (e2e/assets_test.go).
#
# Found on PATH: nothing to do. Missing, as root with apt-get: install Debian's
# prometheus package (it ships promtool; no daemon is started without systemd, and one
# that is started listens on its own port, unused by the tests). Missing otherwise:
# print the command to run and exit 1.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
	echo "ensure-promtool: using $(command -v promtool)"
	exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-promtool: promtool not found; installing Debian's prometheus package"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends prometheus; then
		apt-get update
		apt-get install -y --no-install-recommends prometheus
	fi
	exit 0
fi
echo "ensure-promtool: promtool is missing; install it with: sudo apt-get install -y prometheus" >&2
exit 1
