"""A lora=full job saves the whole trained model in its adapter/ folder. Evaluation (eval.adapter_path=<job>),
predict and chat load the trained weights from there. Before: evaluation refused the folder ("no LoRA adapter"),
and predict and chat silently answered with the untrained base model."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from medgrpo.errors import ConfigError

TRAINED_NORM = 2.0  # the tiny model's final norm starts at 1.0: a value only the "trained" weights have


def _full_job(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A finished lora=full job: its adapter/ holds the tiny model with one weight changed, as training would."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medgrpo.config import compose_config

    job = tmp_path / "job"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight.fill_(TRAINED_NORM)
    model.save_pretrained(job / "adapter")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(job / "adapter")
    cfg = compose_config("preset=tiny", "lora=full", f"model.name_or_path={tiny_model_dir}", "model.builder=null",
                         "logger=disabled", output_dir=job)
    (job / "results.json").write_text(json.dumps({"status": "ok",
                                                  "config": OmegaConf.to_container(cfg, resolve=True)}))
    return job


def _norm(policy) -> float:
    return float(policy.model.model.norm.weight.detach().mean())


def test_predict_answers_with_the_trained_weights_of_a_full_job(tmp_path, tiny_model_dir):
    from medgrpo.predict import load_predictor

    job = _full_job(tmp_path, tiny_model_dir)
    predictor = load_predictor({"run": str(job)})
    assert _norm(predictor.policy) == TRAINED_NORM  # before: 1.0, the base model's


def test_an_evaluation_of_a_full_job_loads_its_saved_model(tmp_path, tiny_model_dir):
    from medgrpo.backends import LoraSpec, load_policy
    from medgrpo.config import adopt_trained_job, compose_config, validate

    job = _full_job(tmp_path, tiny_model_dir)
    cfg = compose_config("preset=tiny", "train.enabled=false", f"eval.adapter_path={job}", output_dir=tmp_path / "e")
    adopt_trained_job(cfg, [f"eval.adapter_path={job}"])
    validate(cfg)  # before: "config key 'eval.adapter_path': no LoRA adapter (adapter_config.json)"
    policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora), adapter_path=cfg.eval.adapter_path,
                         trainable=False)
    assert _norm(policy) == TRAINED_NORM and not hasattr(policy.model, "peft_config")


@pytest.mark.parametrize("method, weights, said", [
    ("full", "adapter", "a PEFT adapter (adapter_config.json), where lora.method=full"),
    ("lora", "whole", "a whole model (config.json, no adapter_config.json), where lora.method=lora"),
    ("lora", "none", "no trained weights"),
])
def test_weights_that_are_not_what_the_method_trains_are_refused_naming_the_key(method, weights, said, tmp_path):
    from medgrpo.config import check_eval, compose_config

    folder = tmp_path / "adapter"
    folder.mkdir()
    if weights != "none":
        (folder / ("adapter_config.json" if weights == "adapter" else "config.json")).write_text("{}")
    cfg = compose_config("preset=tiny", f"lora={'full' if method == 'full' else 'tiny'}",
                         f"eval.adapter_path={folder}", output_dir=tmp_path)
    with pytest.raises(ConfigError, match=re.escape(said)) as refused:
        check_eval(cfg)
    assert refused.value.key == "eval.adapter_path"
