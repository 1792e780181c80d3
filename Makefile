# condaproxy: build and test. Plain POSIX make; every target is phony.
GO ?= go
NPM ?= npm

.PHONY: test deps e2e-deps bench build

# The whole test suite, with the end-to-end client installed first.
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# Everything the tests need beyond Go modules.
deps: e2e-deps

# The real conda client of the e2e tests (@conda-org/rattler, pinned in e2e/package-lock.json).
e2e-deps:
	@if [ ! -d e2e/node_modules/@conda-org/rattler ]; then \
		echo "e2e-deps: cd e2e && $(NPM) ci --no-audit --no-fund"; \
		cd e2e && $(NPM) ci --no-audit --no-fund; \
	fi

bench:
	$(GO) test -run=^$$ -bench=. ./bench/...

build:
	$(GO) build -o condaproxy ./cmd/condaproxy
