"""Training health: is GRPO getting a learning signal? Built from TRL's per-step log, checked against thresholds.

    health = training_health(history, eval_points, cfg.health)   # -> results.json training_health, W&B summary

Per step: the clipped (truncated) completion ratio, the fraction of prompt groups whose rewards all tie (zero
advantage: no gradient from them), each reward function's mean and std, the mean completion length. The summary
holds each series' mean and its first- and last-quarter means. Alarms (each logged as a warning) name what went
wrong and the threshold (cfg.health) it crossed: most completions truncated, most groups without variance, a reward
that saturates while evaluation accuracy falls (reward hacking), completion length collapsing or exploding.
No tool reports these: a run can look fine on the reward curve while learning nothing.
"""
from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

SERIES = {"clipped_ratio": "completions/clipped_ratio", "zero_std_fraction": "frac_reward_zero_std",
          "completion_length": "completions/mean_length", "reward": "reward"}


def per_step(history: list[dict]) -> list[dict]:
    """One record per logged GRPO step (entries that carry a reward), with the health series and each reward."""
    steps = []
    for entry in history:
        if "reward" not in entry:
            continue
        record = {"step": int(entry.get("step", len(steps) + 1))}
        record.update({name: entry[key] for name, key in SERIES.items() if _finite(entry.get(key))})
        for key, value in entry.items():
            if key.startswith("rewards/") and _finite(value):
                _, reward, stat = key.split("/")
                record[f"reward/{reward}/{stat}"] = value
        steps.append(record)
    return steps


def summarize(steps: list[dict]) -> dict[str, dict[str, float]]:
    """Each series: mean over all steps, and over the first and the last quarter of steps."""
    keys = sorted({k for s in steps for k in s if k != "step"})
    window = max(1, len(steps) // 4)
    summary = {}
    for key in keys:
        values = [s[key] for s in steps if key in s]
        if values:
            summary[key] = {"mean": _mean(values), "first_quarter": _mean(values[:window]),
                            "last_quarter": _mean(values[-window:])}
    return summary


def alarms(summary: dict, eval_points: list[dict], thresholds) -> list[dict]:
    """The alarms a run raises; each is {"alarm", "message", "value", "threshold"}."""
    found = []

    def raise_alarm(name: str, message: str, value: float, threshold: float) -> None:
        found.append({"alarm": name, "message": message, "value": round(value, 4), "threshold": threshold})

    clipped = summary.get("clipped_ratio", {}).get("last_quarter")
    if clipped is not None and clipped > thresholds.max_clipped_ratio:
        raise_alarm("truncated", f"{clipped:.0%} of completions in the last quarter of steps hit "
                    "max_completion_length: their rewards are mostly format failures", clipped,
                    thresholds.max_clipped_ratio)
    zero_std = summary.get("zero_std_fraction", {}).get("mean")
    if zero_std is not None and zero_std > thresholds.max_zero_std_fraction:
        raise_alarm("zero_variance", f"{zero_std:.0%} of prompt groups had identical rewards: no advantage, no "
                    "gradient (reward too hard or too easy, or too few num_generations)", zero_std,
                    thresholds.max_zero_std_fraction)
    length = summary.get("completion_length")
    if length and length["first_quarter"] > 0:
        ratio = length["last_quarter"] / length["first_quarter"]
        if ratio < thresholds.length_collapse_ratio:
            raise_alarm("length_collapse", f"completion length fell to {ratio:.2f}x its first-quarter mean",
                        ratio, thresholds.length_collapse_ratio)
        if ratio > thresholds.length_explosion_ratio:
            raise_alarm("length_explosion", f"completion length grew to {ratio:.2f}x its first-quarter mean",
                        ratio, thresholds.length_explosion_ratio)
    drop = accuracy_drop(eval_points)
    if drop is not None and drop > thresholds.max_accuracy_drop:
        for key, stats in summary.items():
            if key.startswith("reward/") and key.endswith("/std") and stats["last_quarter"] < thresholds.saturated_std:
                reward = key.split("/")[1]
                if summary.get(f"reward/{reward}/mean", {}).get("last_quarter", 0) > 0:
                    raise_alarm("reward_hacking", f"reward '{reward}' saturated (std {stats['last_quarter']:.3f}) "
                                f"while eval accuracy fell by {drop:.3f} between evaluations", drop,
                                thresholds.max_accuracy_drop)
    return found


def accuracy_drop(eval_points: list[dict]) -> float | None:
    """Largest fall in mean eval accuracy from one evaluation to a later one (None with fewer than two)."""
    accuracies = [p["accuracy"] for p in eval_points if _finite(p.get("accuracy"))]
    if len(accuracies) < 2:
        return None
    return max(max(accuracies[:i]) - accuracies[i] for i in range(1, len(accuracies)))


def training_health(history: list[dict], eval_points: list[dict], thresholds) -> dict:
    steps = per_step(history)
    summary = summarize(steps)
    found = alarms(summary, eval_points, thresholds)
    for alarm in found:
        log.warning("training health: %s", alarm["message"])
    return {"steps": steps, "summary": summary, "alarms": found, "thresholds": _plain(thresholds)}


def flat_summary(health: dict) -> dict[str, float]:
    """`health/<series>/<stat>` values and the alarm count, for a W&B summary."""
    flat = {f"health/{key}/{stat}": value for key, stats in health["summary"].items() for stat, value in stats.items()}
    flat["health/alarms"] = float(len(health["alarms"]))
    return flat


def eval_points(evaluations: list[tuple[int, dict]]) -> list[dict]:
    """(step, metrics of one evaluation) -> {"step", "accuracy"}: the mean accuracy over its datasets."""
    points = []
    for step, metrics in evaluations:
        accuracies = [v for k, v in metrics.items() if k.endswith("/accuracy") and _finite(v)]
        if accuracies:
            points.append({"step": step, "accuracy": _mean(accuracies)})
    return points


def _plain(thresholds) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(thresholds) if isinstance(thresholds, DictConfig) else dict(thresholds)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
