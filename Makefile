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

.PHONY: install demo test test-long screenshots clean

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

# The demo at its default sizes (3000 CPU training steps): the `long` test that `make test` leaves out.
test-long: $(STAMP)
	$(BIN)/python -m pytest -q -p no:xdist -m long tests

# The README's screenshots (docs/*.png), rewritten only here: a plain test run writes its
# screenshots under each test's temp folder. Needs Debian's chromium (apt-get install chromium).
SCREENSHOT_TESTS := tests/test_studio.py::test_explore_a_wrong_b_right_item_with_image_and_explanation \
	tests/test_studio.py::test_ask_streams_and_answers_a_second_turn \
	tests/test_leaderboard.py::test_browser_sorts_searches_and_opens_an_entry
screenshots: $(STAMP)
	ECGBENCH_SCREENSHOTS=$(CURDIR)/docs $(BIN)/python -m pytest -q -p no:xdist $(SCREENSHOT_TESTS)

clean:
	rm -rf $(VENV) build dist *.egg-info demo_out
