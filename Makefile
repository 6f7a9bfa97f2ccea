# otel-cost — one entry point for people and CI.
#   make run    create .venv if needed, install, start `otel-cost serve` on the embedded store
#   make test   create .venv if needed, install, lint, type-check and run the test suite
#   make bench  start a server on a fresh store, run bench/ingest.py against it, stop it; then
#               bench/caps.py (cap enforcement latency; it starts and stops its own server), then
#               bench/chaos.py (kill -9, store faults, overload: spans acknowledged, stored, lost), then
#               bench/forward.py (processor mode: ingestion with forwarding on, and with the downstream down)
#               stdout: one JSON object per benchmark, one per line
#   make review-screenshot  render the HTML weekly review of a test dataset in headless Chromium
#               (Debian package chromium) and keep the picture: build/review-2026-W48.png
#
# The virtualenv is reused as long as pyproject.toml is unchanged (chDB is a large wheel):
# the stamp file's name carries a hash of pyproject.toml.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deps-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install run test lint bench review-screenshot clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "otel-cost needs Python >= 3.11 (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.deps-*
	@touch $@

run: install
	$(BIN)/otel-cost serve

lint: install
	$(BIN)/ruff check otel_cost tests bench grafana
	$(BIN)/ruff format --check otel_cost tests bench grafana
	$(BIN)/python grafana/build.py --check
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -m "not slow"

bench: install
	@bench/run.sh
	@$(BIN)/python bench/caps.py
	@$(BIN)/python bench/chaos.py
	@$(BIN)/python bench/forward.py

review-screenshot: install
	OTEL_COST_REQUIRE_CHROMIUM=1 OTEL_COST_SCREENSHOT_DIR=build $(BIN)/pytest -q tests/review -k chromium
	@echo build/review-2026-W48.png

clean:
	rm -rf $(VENV) otel-cost-data build .pytest_cache .mypy_cache .ruff_cache
