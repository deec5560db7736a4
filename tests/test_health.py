"""Training health: per-step series, summaries and each alarm, from TRL-shaped log histories."""
from __future__ import annotations

from omegaconf import OmegaConf

from medgrpo.health import accuracy_drop, eval_points, flat_summary, training_health

THRESHOLDS = OmegaConf.create({"max_clipped_ratio": 0.5, "max_zero_std_fraction": 0.5, "length_collapse_ratio": 0.5,
                               "length_explosion_ratio": 2.0, "saturated_std": 0.01, "max_accuracy_drop": 0.05})


def step(n, *, clipped=0.1, zero_std=0.2, length=40.0, fmt_mean=0.3, fmt_std=0.2):
    """One GRPOTrainer log entry (the keys TRL 1.14 writes with logging_steps=1)."""
    return {"step": n, "reward": fmt_mean, "reward_std": fmt_std, "completions/clipped_ratio": clipped,
            "frac_reward_zero_std": zero_std, "completions/mean_length": length,
            "rewards/strict_format/mean": fmt_mean, "rewards/strict_format/std": fmt_std, "loss": 0.01}


def alarms_of(history, points=()):
    return [a["alarm"] for a in training_health(history, list(points), THRESHOLDS)["alarms"]]


def test_a_healthy_run_has_per_step_records_summaries_and_no_alarm():
    history = [step(n, fmt_mean=0.1 * n) for n in range(1, 9)] + [{"train_runtime": 3.0, "step": 8}]
    health = training_health(history, [], THRESHOLDS)
    assert len(health["steps"]) == 8 and health["steps"][0]["reward/strict_format/mean"] == 0.1
    assert health["summary"]["reward/strict_format/mean"]["first_quarter"] == 0.15000000000000002
    assert abs(health["summary"]["clipped_ratio"]["mean"] - 0.1) < 1e-9
    assert health["alarms"] == [] and health["thresholds"]["max_clipped_ratio"] == 0.5
    assert flat_summary(health)["health/alarms"] == 0.0


def test_most_completions_truncated():
    assert alarms_of([step(n, clipped=0.9) for n in range(1, 9)]) == ["truncated"]


def test_most_groups_without_variance():
    assert alarms_of([step(n, zero_std=0.8) for n in range(1, 9)]) == ["zero_variance"]


def test_length_collapse_and_explosion():
    assert alarms_of([step(n, length=40.0 if n <= 2 else 10.0) for n in range(1, 9)]) == ["length_collapse"]
    assert alarms_of([step(n, length=40.0 if n <= 2 else 100.0) for n in range(1, 9)]) == ["length_explosion"]


def test_a_saturated_reward_while_eval_accuracy_falls_is_reward_hacking():
    saturated = [step(n, fmt_mean=0.5, fmt_std=0.2 if n <= 2 else 0.0) for n in range(1, 9)]
    falling = [{"step": 0, "accuracy": 0.5}, {"step": 8, "accuracy": 0.3}]
    assert alarms_of(saturated, falling) == ["reward_hacking"]
    assert alarms_of(saturated, [{"step": 0, "accuracy": 0.3}, {"step": 8, "accuracy": 0.5}]) == []


def test_eval_points_average_each_evaluation_over_its_datasets():
    points = eval_points([(0, {"eval_sft/a/accuracy": 0.2, "eval_sft/b/accuracy": 0.4, "eval_sft/a/format_rate": 1.0}),
                          (8, {"eval/a/accuracy": 0.1, "eval/b/accuracy": 0.1}), (9, {})])
    assert points == [{"step": 0, "accuracy": 0.30000000000000004}, {"step": 8, "accuracy": 0.1}]
    assert accuracy_drop(points) == 0.20000000000000004
    assert accuracy_drop(points[:1]) is None
