"""Shared fixtures: the tiny model (built once per session into a temp cache) and Hydra configs via the compose API."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache of built tiny models for the whole test session (MEDGRPO_CACHE reuses a persistent one)."""
    return Path(os.environ.get("MEDGRPO_CACHE") or tmp_path_factory.mktemp("cache")) / "models"


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache) -> Path:
    from medgrpo.tiny import ensure_tiny_model

    return ensure_tiny_model(model_cache)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from medgrpo.backends.hf import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))
