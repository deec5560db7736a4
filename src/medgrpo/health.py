"""Training health: is GRPO getting a learning signal? Built from TRL's per-step log, checked against thresholds.

    health = training_health(history, eval_points, cfg.health)   # -> results.json training_health, W&B summary

Per step: the clipped (truncated) completion ratio, the fraction of prompt groups whose rewards all tie (zero
advantage: no gradient from them), each reward function's mean and std, the mean completion length. The summary
holds each series' mean and its first- and last-quarter means. Alarms (each logged as a warning) name what went
wrong and the threshold (cfg.health) it crossed: most completions truncated, most groups without variance, a reward
that saturates while evaluation accuracy falls (reward hacking), completion length collapsing or exploding.
No tool reports these: a run can look fine on the reward curve while learning nothing.

    python -m medgrpo.health <sweep or job dir>   # each job's alarms, and reward_curves.png: every reward's mean
                                                  # over the GRPO steps, one panel per job (what `make demo` shows)
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

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


def plot_reward_curves(jobs: dict[str, dict], out: Path) -> Path:
    """One panel per job (name -> training_health block): each reward function's mean per GRPO step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(jobs), figsize=(5 * len(jobs), 3.6), squeeze=False, sharey=True)
    for ax, (name, health) in zip(axes[0], jobs.items()):
        steps = health["steps"]
        rewards = sorted({k.split("/")[1] for s in steps for k in s if k.startswith("reward/") and k.endswith("/mean")})
        for reward in rewards:
            points = [(s["step"], s[f"reward/{reward}/mean"]) for s in steps if f"reward/{reward}/mean" in s]
            ax.plot(*zip(*points), label=reward)
        ax.plot([s["step"] for s in steps], [s.get("reward", 0.0) for s in steps], "k--", label="total (weighted)")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("GRPO step")
    axes[0][0].set_ylabel("mean reward")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Training-health alarms and reward curves of a sweep's jobs.")
    parser.add_argument("run", type=Path, help="a sweep dir (its jobs' results.json) or one job dir")
    args = parser.parse_args(argv)
    jobs = {}
    for results in sorted(args.run.glob("**/results.json")):
        health = json.loads(results.read_text()).get("training_health")
        if health and health["steps"]:
            name = results.parent.name if results.parent != args.run else args.run.name
            jobs[name] = health
            alarms = "; ".join(a["message"] for a in health["alarms"]) or "no alarm"
            print(f"{name}: {alarms}")
    if not jobs:
        print(f"no GRPO job with training_health under {args.run}")
        return 1
    print(f"reward curves: {plot_reward_curves(jobs, args.run / 'reward_curves.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
