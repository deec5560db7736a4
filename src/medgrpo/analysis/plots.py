"""PNG plots (matplotlib, Agg backend: no display needed): a metric per setting with its 95% CI, and an Optuna
study's history and parameter importances."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

from medgrpo.analysis.render import fmt
from medgrpo.analysis.study import StudySummary
from medgrpo.analysis.table import AblationTable, majority_key


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric(table: AblationTable, metric: str, path: Path) -> None:
    """Mean and 95% CI per setting (seeds as hollow dots; a dotted bar: a job's own eval CI, for one job or seeds
    that all gave the same value), the baseline setting's mean (dashed) and the majority-answer baseline (dotted
    red)."""
    plt = _pyplot()
    settings = table.settings
    height = 1.9 + 0.5 * len(settings)
    fig, ax = plt.subplots(figsize=(8.5, height))
    eval_ci_shown = False
    for y, setting in enumerate(settings):
        stat = setting.stats.get(metric)
        if stat is None:
            failed = setting.status in ("failed", "killed", "interrupted")
            ax.text(0.01, y, f"{setting.status}: {setting.problems[:70]}" if failed else "no result",
                    transform=ax.get_yaxis_transform(), va="center", color="tab:red", fontsize=9,
                    bbox={"facecolor": "white", "edgecolor": "tab:red", "boxstyle": "round,pad=0.2"})
            continue
        color = "tab:orange" if setting is table.baseline else "tab:blue"
        if stat.ci_low is not None:
            _, _, (bars,) = ax.errorbar(stat.mean, y, xerr=[[stat.mean - stat.ci_low], [stat.ci_high - stat.mean]],
                                        fmt="o", color=color, capsize=4, elinewidth=1.5)
            if stat.ci_source == "eval":
                bars.set_linestyle(":")  # a job's eval-set interval, not variation over seeds
                eval_ci_shown = True
        else:
            ax.plot(stat.mean, y, "o", color=color)
        if stat.n > 1:
            ax.plot(stat.values, [y] * stat.n, "o", mfc="none", color="grey", alpha=0.7, markersize=5)
    base = table.baseline.stats.get(metric) if table.baseline else None
    if base is not None:
        ax.axvline(base.mean, color="tab:orange", linestyle="--", linewidth=1, label=f"baseline ({fmt(base.mean)})")
    majorities = [s.stats[majority_key(metric)].mean for s in settings if majority_key(metric) in s.stats]
    if majorities:
        ax.axvline(statistics.fmean(majorities), color="tab:red", linestyle=":", linewidth=1.5,
                   label=f"majority-answer baseline ({fmt(statistics.fmean(majorities))})")
    if any(stat.n > 1 for s in settings for m, stat in s.stats.items() if m == metric):
        ax.plot([], [], "o", mfc="none", color="grey", label="single seeds")
    if eval_ci_shown:
        ax.plot([], [], ":", color="grey", label="a job's eval-set CI (one job, or seeds identical)")
    ax.set_yticks(range(len(settings)))
    ax.set_yticklabels([_wrap(s.label) for s in settings], fontsize=9)
    for tick, setting in zip(ax.get_yticklabels(), settings):
        tick.set_fontweight("bold" if setting is table.baseline else "normal")
    ax.set_ylim(len(settings) - 0.5, -0.5)  # sweep order top to bottom
    ax.set_xlabel(f"{metric}  (mean over seeds, 95% CI)")
    ax.set_title(metric)
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # one series with no baseline or majority line: nothing to explain
        fig.legend(fontsize=8, loc="lower center", ncol=3, frameon=False)
        fig.tight_layout(rect=(0, 0.35 / height, 1, 1))  # keep the bottom strip for the legend
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _wrap(label: str, width: int = 38) -> str:
    lines, line = [], ""
    for part in label.split(", "):
        if line and len(line) + len(part) + 2 > width:
            lines.append(line + ",")
            line = part
        else:
            line = f"{line}, {part}" if line else part
    return "\n".join(lines + [line])


def metric_filename(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric) + ".png"


def plot_optuna_history(summary: StudySummary, path: Path) -> None:
    """Objective per trial, the best so far, and FAIL trials as red crosses along the bottom."""
    plt = _pyplot()
    objectives = max(1, len(summary.directions))
    fig, axes = plt.subplots(objectives, 1, figsize=(8, 3.6 * objectives), squeeze=False)
    failed = [t["number"] for t in summary.trials if t["state"] == "FAIL"]
    for index, ax in enumerate(axes[:, 0]):
        done = [t for t in summary.trials if t["state"] == "COMPLETE"]
        xs, ys = [t["number"] for t in done], [t["values"][index] for t in done]
        if done:
            ax.plot(xs, ys, "o", color="tab:blue", label="completed trial")
            best = max if summary.directions[index] == "maximize" else min
            running = [best(ys[: i + 1]) for i in range(len(ys))]
            ax.step(xs, running, where="post", color="tab:orange", label=f"best so far ({summary.directions[index]})")
        else:
            ax.text(0.5, 0.5, "no completed trial", transform=ax.transAxes, ha="center", color="tab:red")
        if failed:
            ax.plot(failed, [0] * len(failed), "x", color="tab:red", markersize=9, clip_on=False,
                    transform=ax.get_xaxis_transform(), label=f"FAIL ({len(failed)})")
        ax.set_xlabel("trial number")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(f"objective {index}" if objectives > 1 else "objective")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    counts = ", ".join(f"{count} {state}" for state, count in summary.state_counts.items())
    axes[0, 0].set_title(f"Optuna study {summary.name}: {counts}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_optuna_importances(summary: StudySummary, path: Path) -> None:
    """Parameter importances, one panel per objective, most important on top."""
    plt = _pyplot()
    panels = len(summary.importances)
    bars_per_panel = max(len(importances) for importances in summary.importances)
    fig, axes = plt.subplots(panels, 1, squeeze=False, figsize=(7, 1.4 + 0.45 * bars_per_panel * panels))
    complete = sum(t["state"] == "COMPLETE" for t in summary.trials)
    for index, (ax, importances) in enumerate(zip(axes[:, 0], summary.importances)):
        names = list(importances)[::-1]
        bars = ax.barh(names, [importances[n] for n in names], color="tab:blue")
        ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=9)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("importance (share of objective variance)")
        ax.set_title(f"parameter importances from {complete} completed trials"
                     + (f", objective {index}" if panels > 1 else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
