"""Unsloth + vLLM: the fast GPU backend (4-bit QLoRA, Unsloth kernels, vLLM rollouts and evaluation).

Imported only when backend=unsloth is chosen on a CUDA machine: `import unsloth` patches TRL and transformers
globally, so it must come first and never on the CPU path. Evaluation generates through the model's vLLM engine
with medgrpo.evaluation.engine.VLLMEngine.
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from medgrpo.backends import LoraSpec, Policy


def load_unsloth_policy(model_cfg: DictConfig, lora: LoraSpec, backend_cfg: DictConfig, model_path: str,
                        adapter_path: str | Path | None, trainable: bool, seed: int) -> Policy:
    if backend_cfg.standby:
        os.environ["UNSLOTH_VLLM_STANDBY"] = "1"  # read at import time
    import unsloth  # noqa: F401  (must precede trl/transformers use: it patches them)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=model_cfg.max_seq_length,
        load_in_4bit=lora.load_in_4bit,
        fast_inference=backend_cfg.fast_inference,
        gpu_memory_utilization=backend_cfg.gpu_memory_utilization,
        max_lora_rank=lora.rank,
        trust_remote_code=model_cfg.trust_remote_code,
        **({"unsloth_vllm_standby": True} if backend_cfg.standby else {}),
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=trainable)
    else:
        model = FastLanguageModel.get_peft_model(
            model,
            **lora.peft_kwargs(),
            use_gradient_checkpointing="unsloth",  # offloads activations: longer completions fit
            random_state=seed,
        )
    return Policy(model=model, tokenizer=tokenizer, backend="unsloth", model_path=model_path)
