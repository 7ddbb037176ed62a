# voicecore's tasks. `make help` lists them. Every target installs what it needs into .venv.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REPORTS := reports

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# The installs print one line each; pip's and cargo's output goes to $(INSTALL_LOG), shown only
# when a step fails.
INSTALL_LOG := $(VENV)/install.log
QUIET_PIP := --quiet --disable-pip-version-check --no-input
define logged
	@$(1) >> $(INSTALL_LOG) 2>&1 || { tail -n 40 $(INSTALL_LOG); echo "make: failed: $(1) (whole log: $(INSTALL_LOG))"; exit 1; }
endef

$(BIN)/maturin:
	@echo "voicecore: creating $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	$(call logged,$(BIN)/pip install $(QUIET_PIP) --upgrade pip)
	$(call logged,$(BIN)/pip install $(QUIET_PIP) 'maturin>=1.7$(COMMA)<2')

COMMA := ,

.PHONY: install
install: $(BIN)/maturin ## build the Rust extension (release) and install voicecore into .venv
	@echo "voicecore: building the Rust core and installing into $(VENV) (log: $(INSTALL_LOG))"
	$(call logged,$(BIN)/maturin develop --release --quiet)

.PHONY: install-dev
install-dev: $(BIN)/maturin ## install voicecore with the test, lint and benchmark tools
	@echo "voicecore: building the Rust core, installing it and the dev tools into $(VENV) (log: $(INSTALL_LOG))"
	$(call logged,$(BIN)/maturin develop --release --quiet --extras dev)

.PHONY: serve
serve: install models ## run the voice agent server at http://127.0.0.1:8000/ (offline pipeline; Ctrl-C stops it)
	@$(BIN)/voicecore serve $(SERVE_ARGS)

.PHONY: demo
demo: install ## run the core demo: real speech through ring, resampler, VAD and pacer
	$(BIN)/voicecore demo

.PHONY: models
models: install ## fetch the pinned models (docs/models.md) into the cache; no network when cached
	@$(BIN)/voicecore models fetch

.PHONY: lint
lint: install-dev ## cargo fmt/clippy, ruff, mypy --strict, stubtest
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --release -- -D warnings
	$(BIN)/ruff check python tests benches harness conftest.py
	$(BIN)/ruff format --check python tests benches harness conftest.py
	$(BIN)/mypy --strict python/voicecore
	$(BIN)/python -m mypy.stubtest voicecore._core

.PHONY: format
format: install-dev ## apply cargo fmt and ruff format
	cargo fmt --all
	$(BIN)/ruff format python tests benches harness conftest.py
	$(BIN)/ruff check --fix python tests benches harness conftest.py

.PHONY: chromium
chromium: ## install Debian's Chromium for the browser tests (apt-get as root; skipped when present)
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	else echo "Chromium is missing and this is not root: the browser tests will skip" \
		"(sudo apt-get install -y chromium)"; fi

.PHONY: fleet-deps
fleet-deps: ## install Debian's HAProxy and Redis for the fleet tests (apt-get as root; skipped when present)
	@if PATH="$$PATH:/usr/sbin" command -v haproxy >/dev/null \
		&& PATH="$$PATH:/usr/sbin" command -v redis-server >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y haproxy redis-server; \
	else echo "HAProxy or Redis is missing and this is not root: the fleet tests will skip" \
		"(sudo apt-get install -y haproxy redis-server)"; fi

.PHONY: test-fleet
test-fleet: install-dev models fleet-deps ## HAProxy + 3 servers + Redis on loopback, 30 callers; one server drained, one killed (last line: JSON)
	$(BIN)/python -m harness.fleet

.PHONY: test-browser
test-browser: install-dev models chromium ## the browser end-to-end tests alone (headless Chromium)
	$(BIN)/pytest tests/browser

.PHONY: test
test: lint models chromium fleet-deps ## everything CI runs: lint, cargo test, pytest (with the browser tests), benchmarks in quick mode
	cargo test --workspace --release
	# The ring's lock-free protocol, model-checked under every interleaving loom explores.
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p voicecore-core --release --lib loom_model
	$(BIN)/pytest tests
	# The web client's logic (ring buffer, PCM, protocol, conversation) under node's test runner.
	node --test web/tests/
	# A fleet behind HAProxy loses no conversation when a server drains or dies.
	$(MAKE) test-fleet
	$(MAKE) bench-quick

.PHONY: bench-quick
bench-quick: install-dev models ## the benchmark suite in a short mode (keeps it working; figures indicative)
	@mkdir -p $(REPORTS)
	$(BIN)/pytest benches --quick --benchmark-json=$(REPORTS)/bench-quick.json

.PHONY: bench
bench: install-dev models ## the full benchmark suite; JSON report in reports/bench.json
	@mkdir -p $(REPORTS)
	$(BIN)/pytest benches --ignore=benches/system --benchmark-json=$(REPORTS)/bench.json

.PHONY: bench-system
bench-system: install-dev models ## the system benchmarks (load, impairment, stalls, soak, timeline): reports/bench-system.json + a summary table
	@mkdir -p $(REPORTS)
	@# The summary is printed even when a suite fails (a missed target is shown, not hidden);
	@# make still fails with pytest's status.
	$(BIN)/pytest benches/system --benchmark-json=$(REPORTS)/bench-system.json; status=$$?; \
		$(BIN)/python -m harness.summary $(REPORTS)/bench-system.json; exit $$status
