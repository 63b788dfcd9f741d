# The two commands of the README: `make demo` and `make test`. Both set up everything first
# (a virtualenv with streamer and its dev tools; Kafka's jars come through Maven on first use).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test stress lint docs kafka-up kafka-down bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

kafka-up: setup
	$(BIN)/streamer kafka up

kafka-down: setup
	$(BIN)/streamer kafka down

# Runs apps.wordcount with `streamer worker` on the local broker and prints its output.
demo: kafka-up
	STREAMER_BROKERS=127.0.0.1:9092 $(BIN)/python -m apps.demo

# Runs every test in TEST_WORKERS processes (pytest-xdist) sharing one session broker (or
# STREAMER_TEST_BROKERS). Most tests wait on Kafka, not on a core (a quiet run keeps the two
# cores about a quarter busy), so three processes cut the wall time by a third even on two
# cores. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 3
test: setup
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

# `make test` STRESS_RUNS times back to back while stress-ng keeps two cores busy (.ci/stress;
# logs in STRESS_LOG_DIR): a test that waits on a clock instead of a state fails there.
STRESS_RUNS ?= 3
stress:
	VENV=$(VENV) TEST_WORKERS=$(TEST_WORKERS) bash .ci/stress $(STRESS_RUNS)

lint: setup
	$(BIN)/ruff check streamer tests apps bench
	$(BIN)/ruff format --check streamer tests apps bench
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml) into site/, strict: a broken link or a stale API
# reference fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
