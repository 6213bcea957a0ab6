# Pulse: one entry point for chores. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The local ClickHouse that `make run` starts (data kept in the repo, ignored by git).
CLICKHOUSE_DIR ?= .pulse/clickhouse
CLICKHOUSE_HTTP_PORT ?= 8123
CLICKHOUSE_TCP_PORT ?= 9000

.PHONY: help setup agent npm bench run stop test test-wasm lint fmt

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Install what is missing (ClickHouse, browsers, wasm tools, clippy, rustfmt); idempotent
	@scripts/setup.sh

agent: setup ## Build the browser agent into target/agent/pkg and print its sizes
	@scripts/build-agent.sh

npm: agent ## Pack the npm package (target/npm/) and build the Vite example with it
	@scripts/build-npm.sh

run: setup ## Build the agent, start a local ClickHouse and the collector on 127.0.0.1:8080 (demo page at /, dashboard at /dashboard.html)
	@scripts/build-agent.sh
	@scripts/clickhouse.sh start $(CLICKHOUSE_DIR) $(CLICKHOUSE_HTTP_PORT) $(CLICKHOUSE_TCP_PORT)
	PULSE_CLICKHOUSE_URL=http://127.0.0.1:$(CLICKHOUSE_HTTP_PORT) cargo run -p pulse-collector

stop: ## Stop the local ClickHouse started by `make run`
	@scripts/clickhouse.sh stop $(CLICKHOUSE_DIR)

test: setup lint ## Run every test: unit, integration on a throwaway ClickHouse, the agent in Chromium and Firefox
	@mkdir -p target
	@scripts/build-agent.sh
	@scripts/build-npm.sh
	set -o pipefail; cargo test --workspace 2>&1 | tee target/test.log
	set -o pipefail; $(MAKE) --no-print-directory test-wasm 2>&1 | tee -a target/test.log
	@scripts/test-summary.sh target/test.log

test-wasm: ## The agent's tests in headless Chromium and Firefox (wasm-pack test)
	wasm-pack test --headless --chrome crates/agent
	wasm-pack test --headless --firefox crates/agent

bench: setup ## Benchmarks with baselines from the same run (table + target/bench/results.json); ARGS=--quick for < 2 min
	@scripts/build-agent.sh
	@command -v twiggy >/dev/null || cargo install twiggy --locked --quiet
	cargo build --profile perf -p pulse-collector -p pulse-bench
	target/perf/pulse-bench $(ARGS)

lint: ## rustfmt and clippy, warnings denied
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p pulse-agent --all-targets --target wasm32-unknown-unknown -- -D warnings

fmt: ## Format the code
	cargo fmt --all
