// Package dockertest gives tests a real Docker Engine and a local test image.
//
// Get (or Start) starts one dockerd per test binary, on first use, from Debian's
// docker.io package (scripts/ensure-docker.sh installs it; `make test` runs that):
//
//	dockerd --data-root DIR/data --exec-root DIR/exec --pidfile DIR/dockerd.pid
//	        -H unix://DIR/docker.sock --bridge=none --iptables=false --ip6tables=false
//	        --ip-forward=false --ip-masq=false --userland-proxy=false
//
// DIR is a fresh temporary directory (short, so that the socket paths fit in
// sun_path). The engine never creates a bridge, a network or an iptables/NAT rule:
// containers run with the host's network stack ("host") or none. dockerd starts its own
// containerd under the exec root, so several test binaries (go test ./... runs packages
// in parallel) each have a private engine. dockerd is this process's child with a
// parent-death signal (SIGTERM: dockerd then stops its containers), and Stop (called by
// Main's wrapper when the tests end) stops it and removes DIR.
//
// Its environment points HTTP(S)_PROXY at 127.0.0.1:9 (nothing listens there): a pull
// (a missing image under --pull if-not-present) fails at once on loopback instead of
// resolving and dialling Docker Hub, so the tests never send traffic off the machine.
//
// No container registry is reachable, so the test image is built locally: a root file
// system holding Debian's static busybox (/bin/busybox from busybox-static) with links
// for its applets and an empty /tmp, imported with the engine's image import API
// (docker import, i.e. FROM scratch). Engine.Image names it. Operators in an
// air-gapped network can build the same image (see the README).
//
// HODEI_TEST_DOCKER_HOST=unix:///path/to/docker.sock uses that engine instead; the image
// is imported into it.
//
// # What was found on the CI machines (Debian 12, 2 cores, root, cgroup v1, no systemd)
//
//   - docker.io 20.10.24 (API 1.41) starts as above in about a second; the overlay2
//     storage driver works on the root file system (ext4). If dockerd exits during
//     start-up with the default driver, Start tries once more with --storage-driver=vfs
//     (slower, but works everywhere) and says so in the error if both fail.
//   - cgroup v1 with the memory, cpu and pids controllers: memory limits (OOM kills,
//     State.OOMKilled), NanoCPUs and PidsLimit are enforced; blkio weights are not
//     (dockerd warns). cgroup driver: cgroupfs (there is no systemd).
//   - Containers with NetworkMode "host" reach a server on 127.0.0.1.
//   - A `docker run --rm IMAGE true` of the busybox image takes ~0.2 s end to end.
//
// Tests that need Docker fail (never skip) when it cannot be started, in CI and
// elsewhere, with the command that installs what is missing.
package dockertest
