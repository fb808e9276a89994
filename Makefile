# The two entry points: `make demo` runs the main job, `make test` the whole check.
# Each creates the virtualenv on first use from the pinned constraints.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_VENV := .venv-bench
SMOLAGENTS := smolagents==1.26.0

.PHONY: demo test lint typecheck unit bench constraints clean

demo: $(STAMP)
	$(BIN)/mesh run

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check mesh tests bench
	$(BIN)/ruff format --check mesh tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

# Benchmarks, by hand. smolagents is installed here only, for comparison.
bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/agent_loop.py
	$(BENCH_VENV)/bin/python bench/sandbox.py

$(BENCH_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -c constraints.txt -e . '$(SMOLAGENTS)'
	touch $@

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Re-pin every dependency after changing pyproject.toml (review the diff).
constraints:
	rm -rf /tmp/mesh-pin && $(PYTHON) -m venv /tmp/mesh-pin
	/tmp/mesh-pin/bin/pip install --quiet -e '.[dev]'
	/tmp/mesh-pin/bin/pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache
