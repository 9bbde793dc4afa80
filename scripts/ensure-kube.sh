#!/usr/bin/env bash
# Make sure the parts of the test Kubernetes node that come from Debian are installed:
# etcd (etcd-server), containerd with its CRI plugin and ctr (containerd), runc, the
# loopback CNI plugin (containernetworking-plugins), mount tools and busybox-static
# (the job image). The Kubernetes binaries themselves
# (kube-apiserver, kubelet, kube-scheduler, kube-controller-manager) are built from the
# Go module proxy by the tests (internal/kubetest) into ~/.cache/hodei/kube/<version>/.
#
# Found: nothing to do. Missing, running as root with apt-get: install them.
# Missing otherwise: print the command to run and exit 1.
#
# Debian's containerd and etcd packages ship systemd units for their own daemons; the
# tests never use them (each test binary starts its own etcd and containerd under a
# temporary directory on loopback), and machines without systemd never start them.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have_pkg() {
	if command -v dpkg-query >/dev/null 2>&1; then
		dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
	else
		return 1
	fi
}

missing=()
have etcd || missing+=(etcd-server)
{ have containerd && have ctr; } || missing+=(containerd)
have runc || missing+=(runc)
# The node is Ready only with a CNI configuration; the harness writes a loopback-only
# one (Pods use hostNetwork: no bridge, no addresses), which needs this plugin.
[ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
have mount || missing+=(mount)
have_pkg busybox-static || [ -x /bin/busybox ] || missing+=(busybox-static)
if [ ${#missing[@]} -eq 0 ]; then
	echo "ensure-kube: using $(command -v etcd), $(command -v containerd), $(command -v runc)"
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-kube: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update </dev/null
	apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
	if have etcd && have containerd && have ctr && have runc && [ -x /usr/lib/cni/loopback ]; then
		echo "ensure-kube: installed"
		exit 0
	fi
	echo "ensure-kube: apt-get installed ${missing[*]} but etcd, containerd, ctr or runc is still missing" >&2
	exit 1
fi

cat >&2 <<MSG
ensure-kube: ${missing[*]} not installed.
The Kubernetes tests start their own etcd, containerd and kubelet. Install them with:

    sudo apt-get install -y etcd-server containerd runc containernetworking-plugins busybox-static

then run make test again.
MSG
exit 1
