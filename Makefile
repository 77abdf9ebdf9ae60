# igny8 — two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo lint format install bench clean help

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install igny8 with its dev tools

run: $(STAMP) ## Start the embedded stack and run a demo automation run live (Ctrl-C stops)
	$(BIN)/igny8 up

demo: $(STAMP) ## Run one demo automation run end to end, print its summary and the operator SQL
	$(BIN)/igny8 demo

# Two test processes: most tests wait on Temporal, the simulator or a subprocess, so two
# of them share two cores well (12 min → 7.5 min on a 2-core machine). Each process has
# its own dev server, databases, simulator, WordPress and S3; TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2

test: $(STAMP) ## Run the test suite (SQLite and PostgreSQL, real Temporal, simulator)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## Run the benchmarks (results in bench/results/)
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/provider_http.py
	$(BIN)/python bench/image_batch.py
	$(BIN)/python bench/image_batch.py --batches 3
	$(BIN)/python bench/automation.py
	$(BIN)/python bench/watchers.py
	@if bash deploy/wordpress/setup.sh --check >/dev/null 2>&1; then \
		$(BIN)/python bench/publish.py; \
	else echo "bench/publish.py skipped: no real WordPress here (run deploy/wordpress/setup.sh)"; fi

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) .data
