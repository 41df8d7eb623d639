# rrjobs — `make demo` runs the main job, `make test` runs every test.
# Both work on a fresh machine: they create .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# seconds each of make test's two pytest processes may run (see test:)
TEST_BUDGET ?= 2700
BUDGETED = timeout --foreground --signal=ABRT --kill-after=30 $(TEST_BUDGET)

.PHONY: demo test unit docs dist integration-install lint lint-imports type check bench clean proto \
        reliability reliability-report bench-peers bench-peers-small

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The package alone: enough for the demo.
$(VENV)/.base: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

# Test, lint, docs and broker-client dependencies, plus the tutorial's example driver.
$(VENV)/.dev: pyproject.toml constraints.txt examples/my_awesome_driver/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,integration,docs]' -e examples/my_awesome_driver
	touch $(VENV)/.base $@

demo: $(VENV)/.base
	$(BIN)/python examples/demo/run.py

# Installs (idempotently) the real brokers; the tests start them on demand.
integration-install: $(VENV)/.dev
	PATH="$(abspath $(BIN)):$$PATH" bash integration/install.sh

# The import contracts first (pyproject.toml [tool.importlinter]): a layer
# violation fails the run before the tests. Two pytest processes share the two cores: the
# integration tests (integration/), which mostly wait on brokers, leases and quiet periods,
# and beside them the unit tests (tests/) then the reliability short form (reliability/,
# brokers of its own); the second's report is printed after the first's (docs/decisions.md,
# "make test runs its tests in two processes"). PYTEST_ARGS (options, not paths) go to both;
# the run fails when either fails (a side that selects no test, exit 5, does not).
# Each process has TEST_BUDGET s: then `timeout` sends it SIGABRT, on which Python's
# faulthandler (-X faulthandler) prints every thread's traceback to its report, and
# SIGKILL 30 s later; so a hang fails the run within CI's limit, naming where it hung
# (--foreground: pytest stays in make's process group, so Ctrl-C still reaches it).
test: $(VENV)/.dev integration-install lint-imports docs dist
	@side_log=$$(mktemp); \
	$(BUDGETED) $(BIN)/python -X faulthandler -m pytest tests reliability $(PYTEST_ARGS) \
	  >"$$side_log" 2>&1 & side=$$!; \
	$(BUDGETED) $(BIN)/python -X faulthandler -m pytest integration $(PYTEST_ARGS); main=$$?; \
	wait $$side; second=$$?; \
	if [ "$$main" = 5 ]; then main=0; fi; if [ "$$second" = 5 ]; then second=0; fi; \
	echo "==== tests/ and reliability/, run beside integration/ (exit $$second) ===="; \
	cat "$$side_log"; rm -f "$$side_log"; \
	stopped="ran past TEST_BUDGET=$(TEST_BUDGET) s and was stopped; its report ends with its threads' tracebacks"; \
	if [ "$$main" = 124 ]; then echo "==== integration/ $$stopped ===="; fi; \
	if [ "$$second" = 124 ]; then echo "==== tests/ and reliability/ $$stopped ===="; fi; \
	echo "==== make test: integration/ exit $$main, tests/ and reliability/ exit $$second ===="; \
	test "$$main" = 0 -a "$$second" = 0

# The documentation site (mkdocs.yml); --strict: a broken link or reference fails.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The sdist and wheel, checked as PyPI would (metadata, README rendering).
dist: $(VENV)/.dev
	rm -rf dist
	$(BIN)/python -m build --outdir dist
	$(BIN)/twine check --strict dist/*

# The reliability suite's full matrix (reliability/, RRJOBS_RELIABILITY=full) against the real
# brokers, then docs/reliability.md from its results (reliability/results/*.jsonl). `make test`
# runs the same tests with small counts, and writes no results.
reliability: $(VENV)/.dev integration-install
	RRJOBS_RELIABILITY=full $(BIN)/python -m pytest reliability -p no:randomly $(PYTEST_ARGS); \
	status=$$?; $(BIN)/python -m reliability.report >/dev/null && \
	echo "docs/reliability.md written from reliability/results"; exit $$status

reliability-report: $(VENV)/.dev
	$(BIN)/python -m reliability.report

unit: $(VENV)/.dev
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

lint: $(VENV)/.dev lint-imports
	$(BIN)/ruff check conftest.py src tests integration examples benchmarks reliability

# The layers: core <- drivers, core <- runtime <- rpc/cli/server, drivers independent.
lint-imports: $(VENV)/.dev
	$(BIN)/lint-imports

type: $(VENV)/.dev
	$(BIN)/mypy

check: lint type unit

bench: $(VENV)/.base
	$(BIN)/rrjobs bench --driver memory --jobs 200000 --json

# rrjobs side by side with taskiq, FastStream, Dramatiq, Celery, huey and persist-queue, each
# in its own venv (benchmarks/peers/.venvs): medians of 3 runs into docs/performance.md and
# benchmarks/results/peers-*.jsonl (docs/performance.md says how). PEERS_ARGS: more options.
bench-peers: $(VENV)/.dev integration-install
	$(BIN)/python -m benchmarks.peers --docs $(PEERS_ARGS)

# The same with a few jobs, one run and a subset of the peers (what CI runs, through
# integration/test_bench_peers.py); writes nothing to docs/.
bench-peers-small: $(VENV)/.dev integration-install
	$(BIN)/python -m benchmarks.peers --small $(PEERS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site dist

# The goridge RPC's protobuf classes, checked in (tests/test_goridge_proto.py fails when stale).
proto: $(VENV)/.dev
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src src/rrjobs/rpc/pb/jobs.proto
