# Hodei Jobs. `make test` is the test command of the README and of .ci/run.

GO ?= go
# Extra flags for go test, e.g. make test GOTESTFLAGS="-race -timeout 25m"
GOTESTFLAGS ?=

.PHONY: all build test lint ensure-postgres

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
