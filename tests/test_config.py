"""Config composition (Hydra compose API) and the checks that run before any model loads."""
from __future__ import annotations

import pytest

from medgrpo.config import check_output_dir, compose_config, validate
from medgrpo.errors import ConfigError
from tests.conftest import ROOT


def test_default_config_is_the_recipe(tmp_path):
    cfg = compose_config(output_dir=tmp_path)
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-3B-Instruct"
    assert (cfg.lora.rank, cfg.lora.load_in_4bit) == (64, True)
    grpo = cfg.grpo
    assert (grpo.num_generations, grpo.learning_rate, grpo.lr_scheduler_type) == (6, 5e-6, "cosine")
    assert (grpo.adam_beta1, grpo.adam_beta2, grpo.weight_decay, grpo.warmup_steps) == (0.9, 0.99, 0.1, 0.1)
    assert (grpo.max_grad_norm, grpo.max_steps, grpo.max_completion_length) == (0.1, 750, 1024)
    assert cfg.backend.name == "auto" and cfg.budget.mode == "off"
    validate(cfg)


def test_tiny_preset_selects_cpu_sized_groups_and_command_line_wins(tmp_path):
    cfg = compose_config("preset=tiny", "grpo.max_steps=20", output_dir=tmp_path)
    assert cfg.model.builder == "tiny" and cfg.backend.name == "hf" and not cfg.lora.load_in_4bit
    assert cfg.grpo.max_steps == 20 and cfg.grpo.optim == "adamw_torch"
    assert compose_config("preset=tiny", "lora=r64", output_dir=tmp_path).lora.rank == 64
    validate(cfg)


@pytest.mark.parametrize("group", ["reward", "budget", "logger", "model", "backend"])
def test_every_option_of_a_group_composes(group, tmp_path):
    options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    assert options
    for option in options:
        compose_config("preset=tiny", f"{group}={option}", output_dir=tmp_path)


@pytest.mark.parametrize("override, key, expected", [
    ("grpo.num_generations=3", "grpo.num_generations", "must be divisible by num_generations"),
    ("grpo.num_generations=1", "grpo.num_generations", "at least 2"),
    ("grpo.max_completion_length=0", "grpo.max_completion_length", "positive integer"),
    ("grpo.per_device_train_batch_size=-8", "grpo.per_device_train_batch_size", "positive integer"),
    ("lora.rank=0", "lora.rank", "positive integer"),
    ("lora.alpha=-1", "lora.alpha", "positive number"),
    ("+grpo.not_a_field=1", "grpo.not_a_field", "not a field of trl.GRPOConfig"),
    ("budget=cap budget.max_thinking_tokens=0", "budget.max_thinking_tokens", "positive integer"),
    ("budget=extend budget.num_ignore=-1", "budget.num_ignore", "integer >= 0"),
    ("eval.num_samples=4", "eval.temperature", "needs sampling"),
    ("budget=cap prompt.think_tag=thinking", "prompt.think_tag", "never asks for it"),
    ("eval.adapter_path=/nonexistent/adapter", "eval.adapter_path", "no LoRA adapter"),
    ("backend.name=tpu", "backend.name", "expected one of"),
    ("train.enabled=false eval.after_training=false", "train.enabled", "evaluation must be on"),
])
def test_bad_values_name_the_key(override, key, expected, tmp_path):
    cfg = compose_config("preset=tiny", *override.split(), output_dir=tmp_path)
    with pytest.raises(ConfigError, match=expected) as error:
        validate(cfg)
    assert error.value.key == key


def test_an_output_dir_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="paths.output_dir"):
        check_output_dir(str(blocker / "job"))


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_composes_and_validates(name, tmp_path):
    cfg = compose_config("preset=tiny", f"+experiment={name}", output_dir=tmp_path)
    assert cfg.task_name == name
    validate(cfg)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml")))
def test_every_hparams_search_composes(name, tmp_path):
    cfg = compose_config(f"hparams_search={name}", output_dir=tmp_path)
    assert str(cfg.objective if isinstance(cfg.objective, str) else cfg.objective[0]).startswith(("eval/", "train/"))
