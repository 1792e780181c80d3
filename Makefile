# condaproxy: build and test. Plain POSIX make; every target is phony.
GO ?= go
NPM ?= npm
FUZZTIME ?= 30s

.PHONY: test deps deps-system e2e-deps bench build fuzz

# The packages `make test` runs (all of them; e.g. PKGS=./coord/ for one).
PKGS ?= ./...

# The whole test suite, with the end-to-end client installed first. A test whose
# prerequisite is missing (redis-server, chromium, versitygw, node, root) skips,
# and leaves a mark in a temp directory (internal/testdata.Skipf); the last line
# names every group skipped and what installs its prerequisite, so a run that
# skipped the redis or browser tests never reads as complete.
test: deps
	$(GO) vet $(PKGS)
	@skips=$$(mktemp -d); \
	CONDAPROXY_SKIPS=$$skips $(GO) test -race -count=1 $(PKGS); status=$$?; \
	marks=$$(cat "$$skips"/* 2>/dev/null | sort | paste -sd, - | sed 's/,/, /g'); \
	rm -rf "$$skips"; \
	if [ -n "$$marks" ]; then echo "make test: SKIPPED test groups: $$marks"; \
	else echo "make test: no test group skipped"; fi; \
	exit $$status

# The Debian packages (redis-server, nginx, wrk, chromium) and versitygw that the
# tests and benches need: what CI installs on its fresh machine (.ci/run runs the
# same script). apt-get needs root or sudo.
deps-system:
	.ci/deps-system

# Everything the tests need beyond Go modules.
deps: e2e-deps

# The real conda client of the e2e tests (@conda-org/rattler, pinned in e2e/package-lock.json).
e2e-deps:
	@if [ ! -d e2e/node_modules/@conda-org/rattler ] || [ ! -d e2e/node_modules/undici ]; then \
		echo "e2e-deps: cd e2e && $(NPM) ci --no-audit --no-fund"; \
		cd e2e && $(NPM) ci --no-audit --no-fund; \
	fi

# Every fuzz target of the module, each for $(FUZZTIME), stopping at the first
# failure. Targets are found, not listed: a package whose test files hold a
# "func Fuzz..." is asked for its targets with go test -list, so a new target runs
# with no change here. The generated corpus stays in GOCACHE; a failing input is
# written to the package's testdata/fuzz/<Target>/, to keep as a regression seed
# once it is fixed.
# FUZZMINIMIZE bounds the shrinking of each new input, which would otherwise take
# most of a short run. A run that ends on the fuzzer's own deadline ("context
# deadline exceeded", no failing input written: a Go fuzzing engine hiccup on a
# loaded machine) is run once more; any real failure stops at once.
FUZZMINIMIZE ?= 100x
fuzz:
	@set -e; \
	targets=0; \
	entries=$$($(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}|{{.ImportPath}}{{end}}' ./...); \
	for entry in $$entries; do \
		dir=$${entry%%|*}; pkg=$${entry#*|}; \
		grep -qs '^func Fuzz' "$$dir"/*_test.go || continue; \
		listed=$$($(GO) test -list '^Fuzz' "$$pkg"); \
		for name in $$(printf '%s\n' "$$listed" | grep '^Fuzz' || true); do \
			echo "fuzz: $$pkg $$name for $(FUZZTIME)"; \
			out=$$(mktemp); \
			if $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) "$$pkg" > "$$out" 2>&1; then \
				cat "$$out"; \
			else \
				cat "$$out"; \
				if grep -q 'context deadline exceeded' "$$out" && ! grep -q 'Failing input written' "$$out"; then \
					echo "fuzz: $$name stopped on the fuzzer's own deadline with no failing input; once more"; \
					$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) "$$pkg" || { rm -f "$$out"; exit 1; }; \
				else rm -f "$$out"; exit 1; fi; \
			fi; \
			rm -f "$$out"; \
			targets=$$((targets + 1)); \
		done; \
	done; \
	if [ "$$targets" -eq 0 ]; then echo "fuzz: no fuzz targets found" >&2; exit 1; fi; \
	echo "fuzz: $$targets targets passed"

bench:
	$(GO) test -run=^$$ -bench=. ./bench/...

build:
	$(GO) build -o condaproxy ./cmd/condaproxy
