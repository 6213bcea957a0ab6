# Pulse: one entry point for chores. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The local ClickHouse that `make run` starts (data kept in the repo, ignored by git).
CLICKHOUSE_DIR ?= .pulse/clickhouse
CLICKHOUSE_HTTP_PORT ?= 8123
CLICKHOUSE_TCP_PORT ?= 9000

# The collector's disk spool under `make run` (accepted beacons live here until ClickHouse has them).
SPOOL_DIR ?= .pulse/spool

# The agent's browser tests: cargo runs the wasm test binary with wasm-bindgen's runner, which
# drives the browser named by CHROMEDRIVER / GECKODRIVER (headless; options in crates/agent/webdriver.json).
WASM_TEST = CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	cargo test -p pulse-agent --target wasm32-unknown-unknown

.PHONY: help setup agent npm bench run stop check test test-wasm lint fmt

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

setup: ## Install everything that is missing (what run needs, then clippy, rustfmt, browsers, WebDriver servers); idempotent
	@scripts/setup.sh test

agent: ## Build the browser agent into target/agent/dist and print its sizes
	@scripts/setup.sh run
	@scripts/build-agent.sh

npm: agent ## Pack the npm package (target/npm/) and build the Vite example with it
	@scripts/build-npm.sh

run: ## Install what running needs, build the agent, start a local ClickHouse and the collector on 127.0.0.1:8080
	@scripts/setup.sh run
	@scripts/build-agent.sh
	@scripts/clickhouse.sh start $(CLICKHOUSE_DIR) $(CLICKHOUSE_HTTP_PORT) $(CLICKHOUSE_TCP_PORT)
	PULSE_DEV=1 PULSE_WRITE_KEYS=dev-write-key@demo PULSE_CLICKHOUSE_URL=http://127.0.0.1:$(CLICKHOUSE_HTTP_PORT) PULSE_SPOOL_DIR=$(SPOOL_DIR) cargo run -p pulse-collector

stop: ## Stop the local ClickHouse started by `make run`
	@scripts/clickhouse.sh stop $(CLICKHOUSE_DIR)

check: ## The inner loop: format check, clippy, unit tests and the collector's tests against the local ClickHouse (no wasm release build, no browsers)
	@PULSE_SETUP_QUIET=1 scripts/setup.sh check
	@scripts/clickhouse.sh start $(CLICKHOUSE_DIR) $(CLICKHOUSE_HTTP_PORT) $(CLICKHOUSE_TCP_PORT) >/dev/null
	@mkdir -p target
	@$(MAKE) --no-print-directory lint
	set -o pipefail; PULSE_TEST_CLICKHOUSE_URL=http://127.0.0.1:$(CLICKHOUSE_HTTP_PORT) \
	  cargo test --workspace --exclude pulse-agent --lib --bins --test clickhouse --test cluster --test router --test shutdown --test alerts --test cli 2>&1 | tee target/check.log
	set -o pipefail; cargo test -p pulse-agent --lib 2>&1 | tee -a target/check.log
	@for db in $$(curl -fsS http://127.0.0.1:$(CLICKHOUSE_HTTP_PORT)/ --data-binary "SELECT name FROM system.databases WHERE name LIKE 't\\_%'"); do \
	  curl -fsS http://127.0.0.1:$(CLICKHOUSE_HTTP_PORT)/ --data-binary "DROP DATABASE IF EXISTS $$db" >/dev/null; done
	@scripts/test-summary.sh target/check.log

test: ## Run every test: lint, unit, integration on a throwaway ClickHouse, end to end and the agent in Chromium and Firefox
	@scripts/setup.sh test
	@$(MAKE) --no-print-directory lint
	@mkdir -p target
	@scripts/build-agent.sh
	@scripts/build-npm.sh
	set -o pipefail; cargo test --workspace 2>&1 | tee target/test.log
	set -o pipefail; $(MAKE) --no-print-directory test-wasm 2>&1 | tee -a target/test.log
	@scripts/test-summary.sh target/test.log

test-wasm: ## The agent's tests in headless Chromium and Firefox
	CHROMEDRIVER=$$(command -v chromedriver) $(WASM_TEST)
	GECKODRIVER=$$(command -v geckodriver || echo $${CARGO_HOME:-$$HOME/.cargo}/bin/geckodriver) $(WASM_TEST)

bench: ## Benchmarks with baselines from the same run (table + target/bench/results.json); ARGS=--quick for < 2 min
	@scripts/setup.sh test
	@scripts/build-agent.sh
	@command -v twiggy >/dev/null || cargo install twiggy --locked --quiet
	cargo build --profile perf -p pulse-collector -p pulse-bench
	target/perf/pulse-bench $(ARGS)

lint: ## rustfmt and clippy, warnings denied
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p pulse-agent --all-targets --target wasm32-unknown-unknown -- -D warnings
	cargo clippy -p pulse-agent --lib --target wasm32-unknown-unknown --no-default-features -- -D warnings

fmt: ## Format the code
	cargo fmt --all
