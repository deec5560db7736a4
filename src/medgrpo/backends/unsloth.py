"""Unsloth + vLLM: the fast GPU backend (4-bit QLoRA, Unsloth kernels, vLLM rollouts and evaluation).

Imported only when backend=unsloth is chosen on a CUDA machine: `import unsloth` patches TRL, transformers and
vLLM globally, so it comes first (import_unsloth) and never on the CPU path. Evaluation generates through the
model's vLLM engine with medgrpo.evaluation.engine.VLLMEngine.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from medgrpo.backends import LoraSpec, Policy, cuda_memory
from medgrpo.backends.vllm_engines import track_engine
from medgrpo.errors import ConfigError

log = logging.getLogger(__name__)
STANDBY_ENV = "UNSLOTH_VLLM_STANDBY"


def import_unsloth(standby: bool):
    """`import unsloth` with vLLM standby (sleep mode) on or off, before trl/transformers are used.

    Unsloth reads UNSLOTH_VLLM_STANDBY when it is imported (it patches vLLM then: unsloth_zoo/vllm_utils.py:1125)
    and again when each engine is built (vllm_utils.py:4426), so one process can hold only one setting. The
    variable is set from backend.standby, never inherited, and a later job asking for the other setting is
    refused: run such sweeps with a process per job (hydra/launcher=submitit_local).
    """
    wanted = "1" if standby else "0"
    if "unsloth" in sys.modules and os.environ.get(STANDBY_ENV, "0") != wanted:
        raise ConfigError("backend.standby", f"{standby} in a process whose Unsloth was imported with standby "
                          f"{not standby}: give each job its own process (hydra/launcher=submitit_local)")
    os.environ[STANDBY_ENV] = wanted
    import unsloth  # noqa: F401  (patches trl, transformers and vLLM on import)

    return unsloth


def load_unsloth_policy(model_cfg: DictConfig, lora: LoraSpec, backend_cfg: DictConfig, model_path: str,
                        adapter_path: str | Path | None, trainable: bool, seed: int) -> Policy:
    """A new LoRA on `model_path`, or the saved adapter at `adapter_path` loaded the Unsloth way; with
    lora.method=full the whole model trains (Unsloth's full_finetuning) and `adapter_path` holds the whole model.

    An adapter is given to FastLanguageModel.from_pretrained itself: Unsloth then loads the base the adapter was
    trained on (adapter_config.json), attaches the adapter and patches the PEFT model (unsloth/models/loader.py
    2034-2104) with `load_lora` and `fast_generate` (unsloth/models/_utils.py:8079), which vLLM evaluation and
    Unsloth's GRPO weight sync need. A plain PeftModel.from_pretrained lacks both.
    """
    full = lora.method == "full"
    max_lora_rank = lora.rank
    if adapter_path is not None and not full:
        adapter = json.loads(Path(adapter_path, "adapter_config.json").read_text())
        base = adapter.get("base_model_name_or_path") or model_path
        if base != model_path:
            log.info("Unsloth loads the adapter's own base %s (model.name_or_path is %s)", base, model_path)
        model_path = base
        max_lora_rank = max(max_lora_rank, adapter["r"])  # vLLM refuses adapters above its max_lora_rank
    import_unsloth(bool(backend_cfg.standby))
    from unsloth import FastLanguageModel

    gpu = cuda_memory()  # after load_policy released the engines an earlier job left
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(adapter_path) if adapter_path is not None else model_path,
        max_seq_length=model_cfg.max_seq_length,
        load_in_4bit=lora.load_in_4bit,
        # Without it Unsloth loads for LoRA and get_peft_model below would train a rank-r adapter instead.
        full_finetuning=full,
        fast_inference=backend_cfg.fast_inference,
        gpu_memory_utilization=backend_cfg.gpu_memory_utilization,
        max_lora_rank=max_lora_rank,
        trust_remote_code=model_cfg.trust_remote_code,
        **({"unsloth_vllm_standby": True} if backend_cfg.standby else {}),
    )
    engine = getattr(model, "vllm_engine", None)
    if engine is not None:  # released by the next job's load (medgrpo.backends.vllm_engines)
        from unsloth_zoo.vllm_utils import delete_vllm

        track_engine(engine, release=delete_vllm)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter_path is None and not full:
        model = FastLanguageModel.get_peft_model(
            model,
            **lora.peft_kwargs(),
            use_gradient_checkpointing="unsloth",  # offloads activations: longer completions fit
            random_state=seed,
        )
    elif not trainable:
        FastLanguageModel.for_inference(model)  # evaluation only: Unsloth's inference mode
    return Policy(model=model, tokenizer=tokenizer, backend="unsloth", model_path=model_path, gpu=gpu, vllm=engine)


def import_first_when_chosen(backend_cfg: DictConfig) -> None:
    """At the start of a job, before anything imports transformers, trl or peft: import unsloth when the job runs
    on it, so that it patches them before their first use (as Unsloth asks). A backend that cannot run here is
    left for the job to report."""
    from medgrpo.backends import resolve_backend_name

    try:
        chosen = resolve_backend_name(backend_cfg.name)
    except ConfigError:
        return
    if chosen == "unsloth":
        import_unsloth(bool(backend_cfg.standby))
