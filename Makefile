# Portcullis: `make run` starts the demo, `make test` runs every test. See README.md.

SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)

SWIFT ?= swift
PYTHON ?= python3
CONFIG ?= config/portcullis.json
DEBUG_BIN := $(CURDIR)/.build/debug/portcullis
RELEASE_BIN := $(CURDIR)/.build/release/portcullis
# Which integration tests, and extra pytest arguments, e.g.
# `make integration TESTS=Tests/Integration/test_walking_skeleton.py PYTEST_ARGS='-k echo -x'`.
TESTS ?= Tests/Integration
PYTEST_ARGS ?=
# Upper bound for the whole integration run; SIGINT lets pytest tear its processes down.
INTEGRATION_TIMEOUT ?= 1800

# Seconds per target for `make fuzz`; FUZZ_TARGETS limits the targets.
FUZZ_SECONDS ?= 60
# Seconds of load for `make chaos`.
CHAOS_SECONDS ?= 180

.PHONY: all deps build release run test unit integration bench check clean fuzz chaos install

all: build

## deps: install missing system packages (apt, as root) and Python test modules
deps:
	@PYTHON=$(PYTHON) scripts/install-deps.sh

## build: debug build (.build/debug/portcullis)
build:
	$(SWIFT) build

## release: release build (.build/release/portcullis)
release:
	$(SWIFT) build -c release

## run: release build, then echo upstream + gateway + nginx on 127.0.0.1:8080 (Ctrl-C stops)
run: deps
	@scripts/run-demo.sh

## test: deps, build, unit tests, integration tests through real nginx
test: deps build unit integration

## unit: XCTest unit tests
unit:
	$(SWIFT) test

## integration: pytest suite in Tests/Integration against .build/debug/portcullis
integration:
	PORTCULLIS_BIN=$${PORTCULLIS_BIN:-$(DEBUG_BIN)} timeout --signal=INT --kill-after=60 $(INTEGRATION_TIMEOUT) \
		$(PYTHON) -m pytest -q -p no:cacheprovider $(TESTS) $(PYTEST_ARGS)

## bench: the gateway vs nginx proxy_pass, the C ceiling and HAProxy (scripts/bench.sh, docs/benchmarks.md);
##        installs the bench-only packages too (BENCH=1). PORTCULLIS_BIN=path measures another build.
bench:
	@BENCH=1 PYTHON=$(PYTHON) scripts/install-deps.sh
	@if [[ -z "$${PORTCULLIS_BIN:-}" ]]; then $(SWIFT) build -c release; fi
	@scripts/bench.sh $(BENCH_ARGS)

## fuzz: libFuzzer over every parser target (scripts/fuzz.sh, docs/security.md); not part of `make test`,
##       which replays the saved corpus in the unit tests instead
fuzz: build
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

## chaos: constant load with random faults for CHAOS_SECONDS (scripts/chaos.py, docs/security.md); not part of `make test`
chaos: build
	PORTCULLIS_BIN=$${PORTCULLIS_BIN:-$(DEBUG_BIN)} $(PYTHON) scripts/chaos.py --seconds $(CHAOS_SECONDS)

## check: validate the demo config
check: build
	$(DEBUG_BIN) check --config $(CONFIG)

## install: binary, nginx snippet, example config, systemd unit and logrotate file under PREFIX
##          (default /usr/local; BIN=path installs another build, e.g. .build/debug/portcullis)
PREFIX ?= /usr/local
BIN ?= $(RELEASE_BIN)
install:
	@if [[ "$(BIN)" == "$(RELEASE_BIN)" ]]; then $(SWIFT) build -c release; fi
	@scripts/install.sh "$(PREFIX)" "$(BIN)"

## clean: remove build output and runtime files
clean:
	rm -rf .build run
	find Tests scripts -name __pycache__ -type d -prune -exec rm -rf {} +
