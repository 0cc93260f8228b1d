# Two commands on a fresh machine (only Python 3.11+ and make needed):
#   make demo   sets up .venv and runs the whole job end to end on a generated CRM
#   make test   sets up .venv and runs the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: demo test test-fast lint bench bento clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	DEMO=$(DEMO) BIN=$(BIN) bash scripts/demo.sh

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n 2

# everything but the real-server and long training tiers, on both cores
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not server and not training" -n 2

# mypy cannot follow setuptools' package-dir mapping, so it checks a tree of links laid out as the
# package installs (leadscore/, leadscore/features -> features/, ...).
TYPECHECK := build/typecheck
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	cp -rs $(CURDIR)/leadscore $(TYPECHECK)/leadscore
	for d in features training serving configs; do cp -rs $(CURDIR)/$$d $(TYPECHECK)/leadscore/$$d; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p leadscore

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/generate.py

# The bento installs leadscore from its wheel (bentofile.yaml: python.wheels), so build the wheel first.
bento: $(VENV)/.installed
	rm -rf dist && $(BIN)/python -m pip wheel --no-deps --quiet -w dist .
	$(BIN)/bentoml build .

clean:
	rm -rf $(DEMO) reports mlruns.db mlartifacts leadscore-events.db
