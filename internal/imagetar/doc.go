// Package imagetar writes container images as docker-archive tars (the format of
// `docker save`), in Go, with no Docker: one layer holding the given files, a config
// JSON (entrypoint, command, environment, rootfs.diff_ids) and a manifest.json naming
// the tags. Both `docker load` and containerd's `ctr images import` accept it, which is
// how images reach a machine without a registry: the test Kubernetes node
// (internal/kubetest) imports its pause and busybox images this way, and
// `make agent-image` writes bin/agent-image.tar (hodei/agent:<version>, FROM scratch
// with only the static hodei-agent).
//
// Layout of the archive:
//
//	<layer sha256>/layer.tar   the root file system (an uncompressed tar)
//	<config sha256>.json       the image config
//	manifest.json              [{"Config": ..., "RepoTags": [...], "Layers": [...]}]
//	repositories               {"name": {"tag": "<layer sha256>"}} (older loaders)
//
// Everything is written with fixed timestamps, so the same files give the same image
// ID on every machine.
package imagetar
