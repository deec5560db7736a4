"""Backends load the policy (model + tokenizer + LoRA). `backend=auto` picks Unsloth on CUDA when it is
installed, else plain transformers + PEFT. Unsloth is never imported on the CPU path: it patches TRL globally.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from medgrpo.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Policy:
    """What training and evaluation need from a backend."""

    model: Any          # a PEFT-wrapped causal LM (trainable LoRA), or a plain model when evaluating a base
    tokenizer: Any      # left-padding tokenizer with a chat template and a pad token
    backend: str        # "hf" | "unsloth"
    model_path: str     # where the base weights came from (hub id or local dir)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(cfg: DictConfig) -> str:
    """The backend a config asks for, checked against this machine. Imports nothing heavy."""
    name = cfg.backend.name
    unsloth_installed = importlib.util.find_spec("unsloth") is not None
    if name == "auto":
        return "unsloth" if cuda_available() and unsloth_installed else "hf"
    if name == "unsloth":
        if not cuda_available():
            raise ConfigError("backend", "backend=unsloth needs a CUDA GPU; use backend=hf (or auto) on this machine")
        if not unsloth_installed:
            raise ConfigError("backend", "backend=unsloth needs the gpu extra: pip install -e '.[gpu]'")
    if name == "hf" and cfg.lora.load_in_4bit and not cuda_available():
        raise ConfigError("lora.load_in_4bit", "4-bit (bitsandbytes) needs CUDA; set lora.load_in_4bit=false on CPU")
    return name


def resolve_model_path(model_cfg: DictConfig) -> str:
    """A hub id or local dir for the base weights; builds the tiny model when model.builder=tiny."""
    if model_cfg.builder == "tiny":
        from medgrpo.tiny import ensure_tiny_model

        return str(ensure_tiny_model(model_cfg.name_or_path))
    if model_cfg.builder is not None:
        raise ConfigError("model.builder", f"expected null or 'tiny', got {model_cfg.builder!r}")
    return str(model_cfg.name_or_path)


def load_policy(cfg: DictConfig, backend: str, model_path: str | None = None,
                adapter_path: str | Path | None = None) -> Policy:
    """Load base model + tokenizer and attach LoRA: a new trainable one, or `adapter_path` to evaluate.
    `model_path` defaults to resolve_model_path(cfg.model)."""
    model_path = model_path or resolve_model_path(cfg.model)
    log.info("Loading %s with backend=%s", model_path, backend)
    if backend == "unsloth":
        from medgrpo.backends.unsloth import load_unsloth_policy

        return load_unsloth_policy(cfg, model_path, adapter_path)
    from medgrpo.backends.hf import load_hf_policy

    return load_hf_policy(cfg, model_path, adapter_path)
