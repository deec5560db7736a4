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


# Thresholds that the arithmetic below hits exactly (binary fractions): the tests at a threshold's value are exact.
EXACT = OmegaConf.create({"max_clipped_ratio": 0.5, "max_zero_std_fraction": 0.5, "length_collapse_ratio": 0.5,
                          "length_explosion_ratio": 2.0, "saturated_std": 0.0625, "max_accuracy_drop": 0.0625})


def found(history, points=(), thresholds=EXACT):
    return [(a["alarm"], a["value"], a["threshold"]) for a in training_health(history, list(points), thresholds)["alarms"]]


def test_quarters_are_a_quarter_of_the_steps_rounded_down_and_at_least_one():
    def quarters(n):
        summary = training_health([step(k, length=float(k)) for k in range(1, n + 1)], [], EXACT)["summary"]
        return summary["completion_length"]
    # lengths 1..n: 8 steps -> quarters of 2: (1+2)/2, (7+8)/2, mean 36/8; 12 -> of 3: (1+2+3)/3, (10+11+12)/3;
    # 7 -> 7 // 4 = 1 step: 1 and 7; 3 -> 0 steps would be nothing: 1 step
    assert quarters(8) == {"mean": 4.5, "first_quarter": 1.5, "last_quarter": 7.5}
    assert quarters(12) == {"mean": 6.5, "first_quarter": 2.0, "last_quarter": 11.0}
    assert quarters(7) == {"mean": 4.0, "first_quarter": 1.0, "last_quarter": 7.0}
    assert quarters(3) == {"mean": 2.0, "first_quarter": 1.0, "last_quarter": 3.0}


def test_truncation_is_judged_on_the_last_quarter_of_steps_not_all_of_them():
    # 6 steps at 0.875 then 2 at 0.25: the last quarter (2 steps) is 0.25, though the mean is 5.75/8 = 0.72
    assert found([step(n, clipped=0.875 if n <= 6 else 0.25) for n in range(1, 9)]) == []
    # the reverse: mean (6 x 0.25 + 2 x 0.75) / 8 = 0.375, last quarter 0.75
    assert found([step(n, clipped=0.25 if n <= 6 else 0.75) for n in range(1, 9)]) == [("truncated", 0.75, 0.5)]
    # one step at 0.75 after seven at 0.25: the last quarter is (0.25 + 0.75) / 2 = 0.5, at the threshold: no alarm
    assert found([step(n, clipped=0.25 if n <= 7 else 0.75) for n in range(1, 9)]) == []


def test_zero_variance_is_judged_on_the_mean_of_all_steps():
    # 6 steps with every group tied, then 2 with none: mean 6/8 = 0.75 (the last quarter alone would be 0)
    assert found([step(n, zero_std=1.0 if n <= 6 else 0.0) for n in range(1, 9)]) == [("zero_variance", 0.75, 0.5)]


def test_each_threshold_exactly_at_its_value_raises_nothing():
    at = [step(n, clipped=0.5, zero_std=0.5) for n in range(1, 9)]
    assert found(at) == []
    # lengths 40 -> 20 and 40 -> 80 over the quarters: ratios exactly 0.5 and 2.0
    assert found([step(n, length=40.0 if n <= 2 else 20.0) for n in range(1, 9)]) == []
    assert found([step(n, length=40.0 if n <= 2 else 80.0) for n in range(1, 9)]) == []
    # and just past each: 18 / 40 = 0.45, 82 / 40 = 2.05
    assert found([step(n, length=40.0 if n <= 2 else 18.0) for n in range(1, 9)]) == [("length_collapse", 0.45, 0.5)]
    assert found([step(n, length=40.0 if n <= 2 else 82.0) for n in range(1, 9)]) == [("length_explosion", 2.05, 2.0)]


def saturating(last_std: float, last_mean: float = 0.5):
    """8 steps of a reward whose std is 0.25 in the first half and last_std after; its mean is last_mean."""
    return [step(n, fmt_mean=last_mean, fmt_std=0.25 if n <= 4 else last_std, zero_std=0.0) for n in range(1, 9)]


def test_reward_hacking_at_its_thresholds():
    falls = [{"step": 0, "accuracy": 0.75}, {"step": 8, "accuracy": 0.625}]  # a fall of 0.125
    assert found(saturating(0.0), falls) == [("reward_hacking", 0.125, 0.0625)]
    # a last-quarter std exactly at saturated_std is not saturated
    assert found(saturating(0.0625), falls) == []
    # a fall exactly at max_accuracy_drop (0.75 -> 0.6875) is tolerated
    assert found(saturating(0.0), [{"step": 0, "accuracy": 0.75}, {"step": 8, "accuracy": 0.6875}]) == []


def test_a_reward_stuck_at_zero_is_no_reward_hacking():
    """A reward that never pays has std 0 too, but nothing was gamed: only the groups' missing variance shows."""
    stuck = [step(n, fmt_mean=0.0, fmt_std=0.0, zero_std=1.0) for n in range(1, 9)]
    falls = [{"step": 0, "accuracy": 0.75}, {"step": 8, "accuracy": 0.5}]
    assert found(stuck, falls) == [("zero_variance", 1.0, 0.5)]


def test_a_drop_spread_over_several_evaluations_counts_from_the_best_earlier_one():
    # 0.5, then up to 0.75, then down by 0.03125 twice: no single step falls 0.0625, but 0.75 -> 0.6875 does
    points = [{"step": s, "accuracy": a} for s, a in ((0, 0.5), (4, 0.75), (6, 0.71875), (8, 0.6875))]
    assert accuracy_drop(points) == 0.0625
    assert accuracy_drop(points[:3]) == 0.03125
    assert accuracy_drop([{"step": 0, "accuracy": 0.5}, {"step": 8, "accuracy": 0.75}]) == -0.25  # a rise
    spread = points + [{"step": 9, "accuracy": 0.65625}]  # 0.75 -> 0.65625: 0.09375 over three evaluations
    assert found(saturating(0.0), spread) == [("reward_hacking", 0.0938, 0.0625)]
    # evaluations without a finite accuracy do not count
    assert accuracy_drop([{"step": 0, "accuracy": 0.75}, {"step": 4, "accuracy": float("nan")}, {"step": 8}]) is None


def test_per_step_records_skip_entries_without_a_reward_and_values_that_are_not_finite():
    history = [{"step": 1, "loss": 0.5}, step(2, clipped=float("nan")), {"reward": 0.25, "rewards/fmt/mean": 0.25},
               step(4)]
    steps = training_health(history, [], EXACT)["steps"]
    assert [s["step"] for s in steps] == [2, 2, 4]  # an entry without "step" is numbered by its position (2nd)
    assert "clipped_ratio" not in steps[0] and steps[2]["clipped_ratio"] == 0.1
    assert steps[1] == {"step": 2, "reward": 0.25, "reward/fmt/mean": 0.25}
