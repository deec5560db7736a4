# One command sets up and does each thing; every target (re)creates .venv when pyproject.toml changes.
#   make demo            tiny model + bundled real data on CPU, W&B offline: a small sweep and its ablation table
#   make test            the whole test suite (what CI runs)
#   make test-fast       unit tests only (no subprocess runs, no training)
#   make bench           benchmarks -> benchmarks/results/*.json
#   make ablation-table  [SWEEP=<multirun dir>]  (default: the newest sweep; SWEEP="dir1 dir2" merges sweeps)
#   make ablation-table  STUDY=<name> STORAGE=<database URL or journal file>  (an Optuna study, wherever it ran)
#   make gpu-check       (GPU, in the env of make install-gpu) the GPU path end to end in <= 8 minutes
#   make export RUN=<job dir>  LoRA adapter + merged 16-bit model (+ GGUF with FORMATS=lora,merged,gguf)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quiet pip, minus warnings about local index folders some machines configure but do not have.
pip_install = $(PY) -m pip install -q $(1) 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install install-gpu gpu-check demo export test test-fast bench ablation-table lint clean

install: $(STAMP)

# torch first and pinned, so that no later resolver step can pull a CUDA build onto a CPU machine.
# hydra-optuna-sweeper 1.3.0 pins optuna<3 (broken with SQLAlchemy 2): install it without its deps.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call pip_install,--upgrade pip)
	$(call pip_install,torch==2.13.0)
	$(call pip_install,-e '.[dev,app]')
	$(call pip_install,--no-deps hydra-optuna-sweeper==1.3.0)
	$(PY) -c "import torch, trl, medgrpo; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# GPU machines, inside the conda env from environment.yml (Python 3.11). requirements/gpu.lock pins every package
# (torch is the CUDA build; its header explains the certifi pin): --no-deps installs exactly it, no resolver step.
install-gpu:
	python -m pip install --no-deps -r requirements/gpu.lock
	python -m pip install --no-deps -e .
	python -m pip install --no-deps hydra-optuna-sweeper==1.3.0
	python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; import unsloth, vllm"

# The GPU path end to end in <= 8 minutes on one GPU, no network: GRPO (hf, unsloth, unsloth+vLLM), eval-only from
# the adapter through each engine, export, a 2-job sweep. One JSON line per step; exits non-zero without CUDA.
gpu-check:
	python -m benchmarks.gpu_check

# A 2x2 grid on the tiny model (CPU, W&B offline), then its ablation table: s1 budget forcing (thinking capped at 8
# or 24 tokens) x LoRA rank 4 or 8. The random model's accuracy is 0 everywhere (read it beside the majority
# baseline); the thinking-token columns show the budget knob at work, and Δ/CI columns how a table reads.
DEMO_SWEEP := multirun/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
demo: install
	$(PY) src/run.py -m preset=tiny task_name=demo budget=cap budget.max_answer_tokens=8 \
		budget.max_thinking_tokens=8,24 lora.rank=4,8 hydra.sweep.dir=$(DEMO_SWEEP)
	$(PY) analysis/ablation_table.py --sweep $(DEMO_SWEEP) --metrics \
		eval/pubmedqa/accuracy,eval/pubmedqa/mean_thinking_tokens,eval/pubmedqa/mean_completion_tokens,train/reward

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

bench: install
	$(PY) -m benchmarks.run_all

ablation-table: install
	$(PY) analysis/ablation_table.py $(if $(SWEEP),--sweep $(SWEEP),) $(if $(STUDY),--study $(STUDY) --storage $(STORAGE),)

# LoRA adapter + merged model of a trained job (FORMATS=lora,merged,gguf for GGUF via llama.cpp).
export: install
	$(PY) -m medgrpo.export $(RUN) --formats $(or $(FORMATS),lora,merged)

lint: install
	$(VENV)/bin/ruff check src tests analysis benchmarks

clean:
	rm -rf outputs multirun .cache/tiny-model
