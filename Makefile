# Two entry points: `make run` (set up + run the main job on the bundled sample)
# and `make test` (set up + run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark

.PHONY: run test test-all setup bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The test run also covers the Spark engine, so it installs the spark extra.
$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,spark]'
	touch $(SPARK_STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/recall run --config configs/default.toml

# pytest exits 5 when it selects no test; that is not a failure of the suite.
test: $(SPARK_STAMP)
	$(BIN)/python -m pytest -m "not slow" -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test-all: $(SPARK_STAMP)
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_itemcf.py

clean:
	rm -rf $(VENV) out
