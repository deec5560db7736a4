"""Generation engines: continue a batch of token sequences and return the new tokens. Same interface for
transformers (CPU/GPU) and vLLM (GPU), so budget forcing and evaluation never care which one runs.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
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


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a completion: the tokenizer's EOS and the generation config's (Qwen2.5 has two:
    <|im_end|> and <|endoftext|>)."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    ids.add(tokenizer.eos_token_id)
    return ids


def has_vllm_engine(model) -> bool:
    """Whether the loaded model generates through vLLM: Unsloth attaches `vllm_engine` and `load_lora` only when
    fast_inference loaded one (it also falls back without, e.g. on GPUs vLLM does not support)."""
    return getattr(model, "vllm_engine", None) is not None and callable(getattr(model, "load_lora", None))


def choose_engine(requested: str, model) -> str:
    """eval.engine for the loaded model: `auto` is vLLM when the model has a vLLM engine, else transformers."""
    if requested == "vllm" and not has_vllm_engine(model):
        raise ConfigError("eval.engine", "vllm, but the loaded model has no vLLM engine (Unsloth fell back to "
                                         "its own generation); use eval.engine=auto or hf")
    if requested == "auto":
        return "vllm" if has_vllm_engine(model) else "hf"
    return requested


def check_engine_request(requested: str, use_vllm: bool) -> None:
    """Before any model loads: eval.engine=vllm needs backend=unsloth (as resolved) with fast_inference."""
    if requested == "vllm" and not use_vllm:
        raise ConfigError("eval.engine", "vllm needs backend=unsloth (CUDA, pip install -e '.[gpu]') with "
                                         "backend.fast_inference=true; this job runs without vLLM: use auto or hf")


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
    """The Engine interface over Unsloth's vLLM (`fast_generate`), generating with a LoRA adapter.

    vLLM generates with LoRA weights read from disk: `adapter_dir` when given (a saved adapter), else the model's
    current LoRA weights saved once to a scratch dir (during training). The LoRARequest is built once per engine:
    Unsloth's `load_lora` gives every call a new adapter id, which vLLM would load again (unsloth_zoo
    vllm_utils.py load_lora, `LORA_REQUEST_ID += 1`). Make a new engine when the weights change.
    """

    def __init__(self, model, tokenizer, adapter_dir: Path | None):
        self.model = model
        self.tokenizer = tokenizer
        self.adapter_dir = adapter_dir
        self.eos_ids = eos_token_ids(model, tokenizer)
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._request = None

    def _lora_request(self):
        if self._request is None:
            directory = self.adapter_dir
            if directory is None:
                self._scratch = tempfile.TemporaryDirectory(prefix="medgrpo-lora-")
                self.model.save_pretrained(self._scratch.name)
                directory = self._scratch.name
            self._request = self.model.load_lora(str(directory))
        return self._request

    def generate(self, sequences, max_new_tokens, stop_strings, sampling: Sampling):
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=stop_strings or None,
            # vLLM stops by itself only at the tokenizer's EOS; the others must be named (vllm SamplingParams).
            stop_token_ids=sorted(self.eos_ids),
            include_stop_str_in_output=True,
        )
        prompts = [{"prompt_token_ids": ids} for ids in sequences]
        outputs = self.model.fast_generate(prompts, sampling_params=params, lora_request=self._lora_request(),
                                           use_tqdm=True)
        return [self._trim(output.outputs[0]) for output in outputs]

    def _trim(self, completion) -> Generated:
        # finish_reason "stop": at the tokenizer's EOS stop_reason is None, at a stop_token_ids id it is that id,
        # at a stop string it is the string (vllm/v1/core/sched/utils.py check_stop).
        ended = completion.finish_reason == "stop" and (completion.stop_reason is None
                                                        or completion.stop_reason in self.eos_ids)
        tokens = list(completion.token_ids)
        if ended and tokens and tokens[-1] in self.eos_ids:
            tokens = tokens[:-1]
        return Generated(tokens, ended)
