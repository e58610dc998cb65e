# maskfactory. `make test` runs the suite; it creates the virtual environment first (`make setup`),
# which is a no-op when pyproject.toml and constraints.txt have not changed since the last install.
# `make demo` runs the label job on the embedded default (generated images, the bundled models, local
# Prefect and Ray; no network, no GPU) and prints its summary.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k tables -x"`.
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean

setup: $(STAMP)

# The stamp is newer than its inputs after a successful install, so make skips this recipe
# until pyproject.toml or constraints.txt change. A failed install leaves no stamp.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/maskfactory demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check maskfactory tests benchmarks
	$(BIN)/ruff format --check maskfactory tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
