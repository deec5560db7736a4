"""Backend selection and its errors: decided before any model loads, and never importing unsloth on CPU."""
import sys

import pytest
from omegaconf import OmegaConf

from medgrpo import backends
from medgrpo.errors import ConfigError


def cfg(name, load_in_4bit=False):
    """resolve_backend's inputs: the backend group and the lora group's spec."""
    lora = OmegaConf.create({"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj"],
                             "load_in_4bit": load_in_4bit})
    return OmegaConf.create({"name": name}), backends.LoraSpec.from_config(lora)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)


@pytest.fixture
def cuda(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: True)


def test_auto_is_hf_without_cuda(no_cuda):
    assert backends.resolve_backend(*cfg("auto")) == "hf"
    assert "unsloth" not in sys.modules


def test_auto_is_hf_on_cuda_without_unsloth_installed(cuda, monkeypatch):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    assert backends.resolve_backend(*cfg("auto")) == "hf"


def test_auto_is_unsloth_on_cuda_with_unsloth_installed(cuda, monkeypatch):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object())
    assert backends.resolve_backend(*cfg("auto")) == "unsloth"
    assert "unsloth" not in sys.modules  # selection only looks; importing is the backend's job


def test_unsloth_without_cuda_names_the_key(no_cuda):
    with pytest.raises(ConfigError, match="'backend'.*needs a CUDA GPU"):
        backends.resolve_backend(*cfg("unsloth"))


def test_unsloth_on_cuda_without_the_package_says_how_to_install(cuda, monkeypatch):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[gpu\]'"):
        backends.resolve_backend(*cfg("unsloth"))


def test_4bit_on_cpu_is_refused_with_the_fix(no_cuda):
    with pytest.raises(ConfigError, match="lora.load_in_4bit.*set lora.load_in_4bit=false"):
        backends.resolve_backend(*cfg("hf", load_in_4bit=True))


def test_unknown_model_builder_is_refused():
    with pytest.raises(ConfigError, match="model.builder"):
        backends.resolve_model_path(OmegaConf.create({"builder": "huge", "name_or_path": "x"}))


def test_4bit_on_cpu_is_refused_after_auto_resolves_to_hf(no_cuda):
    with pytest.raises(ConfigError, match="lora.load_in_4bit"):
        backends.resolve_backend(*cfg("auto", load_in_4bit=True))


def test_lora_spec_names_the_bad_key():
    base = {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj"], "load_in_4bit": False}
    for key, value in (("rank", 0), ("alpha", -1), ("dropout", 1.0), ("target_modules", [])):
        with pytest.raises(ConfigError) as error:
            backends.LoraSpec.from_config(OmegaConf.create({**base, key: value}))
        assert error.value.key == f"lora.{key}"
    spec = backends.LoraSpec.from_config(OmegaConf.create(base))
    assert spec.peft_kwargs() == {"r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0, "target_modules": ["q_proj"]}
