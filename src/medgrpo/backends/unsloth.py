"""Unsloth + vLLM: the fast GPU backend (4-bit QLoRA, Unsloth kernels, vLLM rollouts and evaluation).

Imported only when backend=unsloth is chosen on a CUDA machine: `import unsloth` patches TRL and transformers
globally, so it must come first and never on the CPU path. Evaluation generates with vLLM through
`model.fast_generate(..., lora_request=model.load_lora(dir))`: without the LoRA request vLLM would evaluate the
base model, so the current adapter is always saved and passed.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from medgrpo.backends import Policy
from medgrpo.evaluation.engine import Generated, Sampling


def load_unsloth_policy(cfg: DictConfig, model_path: str, adapter_path: str | Path | None) -> Policy:
    if cfg.backend.standby:
        os.environ["UNSLOTH_VLLM_STANDBY"] = "1"  # read at import time
    import unsloth  # noqa: F401  (must precede trl/transformers use: it patches them)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=cfg.model.max_seq_length,
        load_in_4bit=cfg.lora.load_in_4bit,
        fast_inference=cfg.backend.fast_inference,
        gpu_memory_utilization=cfg.backend.gpu_memory_utilization,
        max_lora_rank=cfg.lora.rank,
        trust_remote_code=cfg.model.trust_remote_code,
        **({"unsloth_vllm_standby": True} if cfg.backend.standby else {}),
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=cfg.train.enabled)
    else:
        model = FastLanguageModel.get_peft_model(
            model,
            r=cfg.lora.rank,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            use_gradient_checkpointing="unsloth",  # offloads activations: longer completions fit
            random_state=cfg.seed,
        )
    return Policy(model=model, tokenizer=tokenizer, backend="unsloth", model_path=model_path)


class VLLMEngine:
    """The Engine interface over Unsloth's vLLM (`fast_generate`), generating with the job's LoRA adapter."""

    def __init__(self, model, tokenizer, adapter_dir: Path | None):
        self.model = model
        self.tokenizer = tokenizer
        self.adapter_dir = adapter_dir
        self._scratch: tempfile.TemporaryDirectory | None = None

    def _lora_request(self):
        if self.adapter_dir is not None:
            return self.model.load_lora(str(self.adapter_dir))
        # During training there is no saved adapter yet: save the current LoRA weights to evaluate them.
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="medgrpo-lora-")
        self.model.save_pretrained(self._scratch.name)
        return self.model.load_lora(self._scratch.name)

    def generate(self, sequences, max_new_tokens, stop_strings, sampling: Sampling):
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=stop_strings or None,
            include_stop_str_in_output=True,
        )
        prompts = [{"prompt_token_ids": ids} for ids in sequences]
        outputs = self.model.fast_generate(prompts, sampling_params=params, lora_request=self._lora_request(),
                                           use_tqdm=True)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            # finish_reason "stop" with stop_reason None is end-of-sequence; a stop string sets stop_reason.
            ended = completion.finish_reason == "stop" and completion.stop_reason is None
            tokens = list(completion.token_ids)
            if ended and tokens and tokens[-1] == self.tokenizer.eos_token_id:
                tokens = tokens[:-1]
            results.append(Generated(tokens, ended))
        return results
