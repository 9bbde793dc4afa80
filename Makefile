# Hodei Jobs. `make test` is the test command of the README and of .ci/run.

GO ?= go
# Extra flags for go test, e.g. make test GOTESTFLAGS="-race -timeout 25m"
GOTESTFLAGS ?=

.PHONY: all build test lint ensure-postgres generate

all: lint build test

## build: compile every package and the hodei binary into bin/
build:
	$(GO) build ./...
	$(GO) build -o bin/hodei ./cmd/hodei

## ensure-postgres: install PostgreSQL's server binaries if missing (the tests need them)
ensure-postgres:
	bash scripts/ensure-postgres.sh

## test: run every test against real PostgreSQL (started by the tests themselves)
test: ensure-postgres
	$(GO) test $(GOTESTFLAGS) ./...

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
