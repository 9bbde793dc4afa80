# Hodei Jobs. `make test` is the test command of the README and of .ci/run.

GO ?= go
# Flags for go test, e.g. make test GOTESTFLAGS="-race -timeout 35m" (the e2e package
# alone takes over 10 minutes, go test's default timeout)
GOTESTFLAGS ?= -timeout 30m

.PHONY: all build test test-kube cover lint ensure-postgres ensure-docker ensure-promtool ensure-nats ensure-kube agent-image generate fuzz

all: lint build test

## build: compile every package, the hodei binary and the slim worker agent into bin/
## (both static: the docker provider mounts one into containers; hodei server and hodei
## dev start bin/hodei-agent for local workers when it sits next to bin/hodei)
build:
	$(GO) build ./...
	CGO_ENABLED=0 $(GO) build -o bin/hodei ./cmd/hodei
	CGO_ENABLED=0 $(GO) build -o bin/hodei-agent ./cmd/hodei-agent

## ensure-postgres: install PostgreSQL's server binaries if missing (the tests need them)
ensure-postgres:
	bash scripts/ensure-postgres.sh

## ensure-docker: install Debian's Docker Engine and busybox-static if missing (the
## provider tests start their own dockerd and build a busybox image with them)
ensure-docker:
	bash scripts/ensure-docker.sh

## ensure-kube: install Debian's etcd-server, containerd, runc, the loopback CNI plugin
## and busybox-static if missing (internal/kubetest starts a single-node Kubernetes with
## them), then build kube-apiserver, kubelet, kube-scheduler and kube-controller-manager
## from the Go module proxy into ~/.cache/hodei/kube/<version>/ if not there yet (the
## first build takes minutes; it happens here, outside the tests' timeouts)
ensure-kube:
	bash scripts/ensure-kube.sh
	$(GO) run ./internal/kubetest/kubebins

## agent-image: bin/agent-image.tar, the kubernetes provider's agent image
## (hodei/agent:$(VERSION), FROM scratch holding only the static hodei-agent), as a
## docker-archive tar for `docker load` or `ctr -n k8s.io images import`; no Docker needed
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
agent-image:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/hodei-agent ./cmd/hodei-agent
	$(GO) run ./internal/imagetar/mkimage -o bin/agent-image.tar -tag hodei/agent:$(VERSION) \
		-entrypoint /hodei-agent bin/hodei-agent=/hodei-agent

## ensure-nats: install Debian's nats-server (2.9 line) if missing (the tests check
## Hodei against it; the go.mod version is built by the tests, internal/natstest)
ensure-nats:
	bash scripts/ensure-nats.sh

## ensure-promtool: install promtool (Debian's prometheus package) if missing (the test
## of deploy/observability checks the alert rules with it)
ensure-promtool:
	bash scripts/ensure-promtool.sh

## test: run every test against real PostgreSQL and a real Docker Engine (both started
## by the tests themselves)
test: ensure-postgres ensure-docker ensure-promtool ensure-nats ensure-kube
	$(GO) test $(GOTESTFLAGS) ./...

## test-kube: run only the Kubernetes tests (the packages that start internal/kubetest's
## cluster: every package importing it, and deploy/kubernetes's manifests test)
test-kube: ensure-postgres ensure-docker ensure-nats ensure-kube
	$(GO) test $(GOTESTFLAGS) $$($(GO) list -f '{{if or (eq .ImportPath "github.com/hodei-jobs/hodei/internal/kubetest") (eq .ImportPath "github.com/hodei-jobs/hodei/internal/imagetar")}}{{.ImportPath}}{{else}}{{range .TestImports}}{{if eq . "github.com/hodei-jobs/hodei/internal/kubetest"}}{{$$.ImportPath}}{{end}}{{end}}{{range .XTestImports}}{{if eq . "github.com/hodei-jobs/hodei/internal/kubetest"}}{{$$.ImportPath}}{{end}}{{end}}{{end}}' ./... | sort -u)

## cover: run the tests with coverage and print each package's statement coverage,
## then a table of them (CI's flags via GOTESTFLAGS; PKGS=./saga/... for a part)
PKGS ?= ./...
cover: ensure-postgres ensure-docker ensure-promtool ensure-nats ensure-kube
	@log=$$(mktemp); status=0; \
	$(GO) test $(GOTESTFLAGS) -cover $(PKGS) 2>&1 | tee "$$log" || status=1; \
	grep -q '^FAIL' "$$log" && status=1; \
	echo "--- coverage per package"; \
	awk '{ c = ""; for (i = 1; i < NF; i++) if ($$i == "coverage:") c = $$(i+1) } \
		$$1 == "coverage:" { pending = c; next } \
		$$1 == "FAIL" && NF >= 2 && $$2 != "" { printf "%-48s %s (tests FAILED)\n", $$2, pending; pending = ""; next } \
		c != "" { printf "%-48s %s\n", ($$1 == "ok" ? $$2 : $$1), c }' "$$log" | sort; \
	rm -f "$$log"; exit $$status

## lint: fail on unformatted files, then go vet
lint:
	@files=$$(gofmt -l .); if [ -n "$$files" ]; then echo "gofmt needed:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...

## generate: regenerate gen/ from proto/ with pinned tool versions
## (protoc from Debian's protobuf-compiler package; plugins installed into bin/)
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.21.1
generate:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(CURDIR)/bin $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_GO_VERSION)
	rm -rf gen
	PATH=$(CURDIR)/bin:$$PATH protoc -I proto \
		--go_out=. --go_opt=module=github.com/hodei-jobs/hodei \
		--connect-go_out=. --connect-go_opt=module=github.com/hodei-jobs/hodei \
		proto/hodei/v1/*.proto

## fuzz: run every fuzz target for FUZZTIME each (default 30s; e.g. make fuzz FUZZTIME=5m).
## Seed corpora live in each package's testdata/fuzz/<target>/ and run with `make test`;
## a failing input is written there too: commit it with the fix.
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	./internal/protoconv:FuzzSubmitJobJSON \
	./internal/protoconv:FuzzSubmitJobProto \
	./saga:FuzzJSONCodec \
	./outbox:FuzzOutboxCommandDecode \
	./agent:FuzzServerMessage \
	./agent:FuzzMasker \
	./auth:FuzzParseBearer \
	./domain:FuzzParseMemory \
	./domain:FuzzJobSpecValidate
fuzz: ensure-postgres
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "--- $$fn ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
	done
