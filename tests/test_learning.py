"""The GRPO loop must learn, not only run: on a simple verifiable reward the tiny model's mean reward rises
clearly within 30 steps — and does not when the policy update is switched off (learning rate 0)."""
from __future__ import annotations

import pytest
from datasets import Dataset
from omegaconf import open_dict

from medgrpo.backends import LoraSpec, load_policy
from medgrpo.config import compose_config
from medgrpo.train import train

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 12 + 30?", "How many chambers does the human heart have?", "Is aspirin an NSAID?",
             "How many bones are in the adult human body?"]


def digit_fraction(prompts, completions, **columns):
    """Verifiable toy reward: the share of characters that are digits (a random model writes ~3%)."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


def train_tiny(tmp_path, model_cache, learning_rate: float) -> dict:
    cfg = compose_config("preset=tiny", "grpo.max_steps=30", f"grpo.learning_rate={learning_rate}", "seed=0",
                      output_dir=tmp_path)
    with open_dict(cfg):
        cfg.model.name_or_path = str(model_cache)
    policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora))
    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in QUESTIONS * 8])
    return train(cfg.grpo, policy, prompts, [digit_fraction], [1.0], tmp_path, report_to=[], seed=cfg.seed)


def test_mean_reward_rises_at_least_twofold(tmp_path, model_cache):
    metrics = train_tiny(tmp_path, model_cache, learning_rate=2e-2)
    first, last = metrics["train/reward_first_window"], metrics["train/reward_last_window"]
    assert last >= 2 * first, f"reward did not rise: first window {first:.3f}, last window {last:.3f}"
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_without_policy_updates_the_reward_stays_flat(tmp_path, model_cache):
    metrics = train_tiny(tmp_path, model_cache, learning_rate=0.0)
    first, last = metrics["train/reward_first_window"], metrics["train/reward_last_window"]
    assert last < 2 * first, "the reward rose without any update: the learning test could not fail"
