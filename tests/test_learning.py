"""The GRPO loop must learn, not only run: on a simple verifiable reward the tiny model's mean reward rises
clearly within 30 steps — and does not when the policy update is switched off (learning rate 0)."""
from __future__ import annotations

import optuna
import pytest
from datasets import Dataset
from omegaconf import open_dict

from medgrpo.backends import LoraSpec, load_policy
from medgrpo.config import compose_config
from medgrpo.train import train
from tests._run import read_results, run_entrypoint

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


# SFT -> GRPO on the tiny_learner model (issue 18): the settings of `make demo`, made smaller where the assertion
# allows. SFT runs once (stage.sft.seed fixed, cached by its hash in the session's model cache) and the GRPO seeds
# start from it. GRPO trains on GSM8K's short prompts: ~5x cheaper per step than PubMedQA's, and the SFT model (taught
# on PubMedQA) does not write the format there yet, so the format rewards have room to rise.
# Measured 2026-12-01 (idle, 2 cores): SFT 0.91 format rate on these 32 items (stage.sft.seed 1 and 2: 1.0, 1.0),
# 95 s; the three GRPO seeds pass (at grpo.learning_rate=0 it does not rise: 0.016 -> 0.004). 2026-12-07 on another
# CPU: 0.53 at 150 SFT steps (seed 1: 0.94), 0.91 at 200, the steps conf/stage/sft/tiny.yaml now sets.
LEARNER = ("preset=tiny", "model=tiny_learner", "lora=full", "stage.sft.seed=0", "logger=disabled",
           "data.eval=[pubmedqa]")
GRPO_SETTINGS = ("grpo.max_steps=16", "grpo.per_device_train_batch_size=16", "grpo.max_completion_length=64",
                 "grpo.learning_rate=5e-4", "grpo.temperature=0.7", "data.mix.pubmedqa_labeled_pool=0")


@pytest.mark.learning
def test_sft_teaches_the_response_format_on_held_out_items(tmp_path, model_cache):
    done = run_entrypoint(*LEARNER, "stage=sft", "eval.before_training=true", "eval.limit=32",
                          "eval.max_new_tokens=96", f"hydra.run.dir={tmp_path}", cache=model_cache.parent, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_results(tmp_path)["metrics"]
    before, after = metrics["eval_base/pubmedqa/format_rate"], metrics["eval/pubmedqa/format_rate"]
    assert before <= 0.1, f"the random model already writes the format ({before:.2f}): the test proves nothing"
    assert after >= 0.8, f"format rate after SFT {after:.2f} (before {before:.2f}) on 32 held-out PubMedQA items"
    assert metrics["eval/pubmedqa/truncation_rate"] < 1.0


# GRPO's reward over 16 steps is a noisy signal per seed: on 2026-12-07's CPU seeds 2 and 3 rose (0.057 -> 0.086,
# 0.043 -> 0.230) while seed 1 fell (0.053 -> 0.033). What GRPO must show is the rise over seeds: their mean at least
# 1.5x (measured 2.3x; at grpo.learning_rate=0 it falls, test_without_policy_updates...), and most seeds rising.
@pytest.mark.learning
def test_grpo_after_sft_raises_the_reward_over_three_seeds(tmp_path, model_cache):
    done = run_entrypoint("-m", *LEARNER, *GRPO_SETTINGS, "stage=sft_grpo", "seed=1,2,3", "eval.after_training=false",
                          "objective=train/reward", f"hydra.sweep.dir={tmp_path}", cache=model_cache.parent,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.parent for p in tmp_path.glob("*/results.json"))
    assert len(jobs) == 3, jobs
    windows = {}
    for job in jobs:
        results = read_results(job)
        assert results["status"] == "ok", results.get("error")
        assert results["training_health"]["steps"], "training_health has no per-step records"
        windows[job.name] = (results["metrics"]["train/reward_first_window"],
                             results["metrics"]["train/reward_last_window"])
    first = sum(f for f, _ in windows.values()) / 3
    last = sum(lw for _, lw in windows.values()) / 3
    assert last >= 1.5 * first, f"mean reward over seeds: first quarter {first:.3f}, last {last:.3f}: {windows}"
    assert sum(lw > f for f, lw in windows.values()) >= 2, f"most seeds' reward did not rise: {windows}"


@pytest.mark.learning
def test_the_tiny_optuna_study_optimises_an_objective_that_moves(tmp_path, model_cache):
    """hparams_search=tiny_optuna (issue 17): its objective, the reward over the last quarter of GRPO steps after the
    (cached) SFT, rises above where training started at the learning rate the study finds best, so its "best
    parameters" compare something. A trial at a learning rate near the low end of the range (1e-5) need not move
    in 16 steps: that is what the study is there to find out."""
    done = run_entrypoint("-m", "hparams_search=tiny_optuna", "hydra.sweeper.n_trials=2", "logger=disabled",
                          "eval.after_training=false", f"hydra.sweep.dir={tmp_path}", cache=model_cache.parent,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="tiny_sft_grpo", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    moved = {}
    for job in sorted(p.parent for p in tmp_path.glob("*/results.json")):
        results = read_results(job)
        metrics = results["metrics"]
        moved[results["config"]["grpo"]["learning_rate"]] = (metrics["train/reward_first_window"],
                                                            metrics["train/reward_last_window"])
    first, last = moved[study.best_trial.params["grpo.learning_rate"]]
    assert last > first, f"the best trial's objective did not move ({first:.3f} -> {last:.3f}); all trials: {moved}"
    assert last == study.best_value
