# Two entry points for a fresh machine: `make demo` and `make test` (both create .venv on first use).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Overrides for a real run on a GPU machine (see README): the defaults run the offline demo.
MODEL ?=
DATA ?=
TASKS ?= ecgbench
JUDGE_MODEL ?=
OUT ?= demo_out
# Test processes (pytest-xdist); each test file stays on one process so module fixtures are built once.
TEST_WORKERS ?= auto

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ecgbench demo --out $(OUT) $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA)) --tasks $(TASKS) $(if $(JUDGE_MODEL),--judge-model $(JUDGE_MODEL))

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

clean:
	rm -rf $(VENV) build dist *.egg-info demo_out
