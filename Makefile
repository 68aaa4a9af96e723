# Two entry points: `make run` (set up + run the main job on the bundled sample)
# and `make test` (set up + run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-all setup bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/recall run --config configs/default.toml

# pytest exits 5 when it selects no test; that is not a failure of the suite.
test: setup
	$(BIN)/python -m pytest -m "not slow" -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_itemcf.py

clean:
	rm -rf $(VENV) out
