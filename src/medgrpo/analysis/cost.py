"""Accuracy against cost: is extra thinking worth its tokens?

    points = cost_points(table, "eval/pubmedqa/accuracy")   # one per setting with both numbers
    front = pareto_front(points)                             # settings no other beats on both axes
    plot_cost(table, "eval/pubmedqa/accuracy", path, price_per_1k_tokens=0.6)

Cost is the mean number of generated tokens per completion (thinking + answer, `mean_completion_tokens` of the
same eval set), summarised over seeds like every other metric (medgrpo.analysis.table), so both axes carry
the table's 95% CI. With a price per 1,000 generated tokens, a second x-axis reads the cost of answering
1,000 items: mean tokens x price (1,000 items x tokens / 1,000 x price).
"""
from __future__ import annotations

from dataclasses import dataclass

from medgrpo.analysis.table import AblationTable, Setting, Stat


@dataclass(frozen=True)
class CostPoint:
    setting: Setting
    accuracy: Stat
    tokens: Stat


def tokens_metric(accuracy_metric: str) -> str:
    """eval/<dataset>/accuracy -> eval/<dataset>/mean_completion_tokens (the same eval set's cost)."""
    return accuracy_metric.rsplit("/", 1)[0] + "/mean_completion_tokens"


def cost_points(table: AblationTable, metric: str) -> list[CostPoint]:
    """Settings that have both the accuracy and its eval set's mean generated tokens, in sweep order."""
    cost = tokens_metric(metric)
    return [CostPoint(s, s.stats[metric], s.stats[cost]) for s in table.settings
            if metric in s.stats and cost in s.stats]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (tokens, accuracy) points that no other point dominates (as cheap or cheaper and as accurate
    or more, strictly better on one), sorted by tokens: the settings worth considering."""
    front = [i for i, (cost, value) in enumerate(points)
             if not any(c <= cost and v >= value and (c, v) != (cost, value) for c, v in points)]
    return sorted(front, key=lambda i: points[i])


def cost_per_1k_items(mean_tokens: float, price_per_1k_tokens: float) -> float:
    """What 1,000 items cost at mean_tokens generated tokens each: 1000 * mean_tokens / 1000 * price."""
    return mean_tokens * price_per_1k_tokens


def _errors(stat: Stat) -> list[list[float]]:
    if stat.ci_low is None:
        return [[0.0], [0.0]]
    return [[stat.mean - stat.ci_low], [stat.ci_high - stat.mean]]


def plot_cost(table: AblationTable, metric: str, path, price_per_1k_tokens: float | None = None) -> bool:
    """The accuracy/cost scatter with 95% CIs on both axes and the Pareto front; False (nothing written) when no
    setting has both numbers."""
    from medgrpo.analysis.plots import _pyplot, _wrap

    points = cost_points(table, metric)
    if not points:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.2))
    front = pareto_front([(p.tokens.mean, p.accuracy.mean) for p in points])
    for point in points:
        color = "tab:orange" if point.setting is table.baseline else "tab:blue"
        ax.errorbar(point.tokens.mean, point.accuracy.mean, xerr=_errors(point.tokens), yerr=_errors(point.accuracy),
                    fmt="o", color=color, capsize=3, elinewidth=1.2)
        ax.annotate(_wrap(point.setting.label, 30), (point.tokens.mean, point.accuracy.mean), fontsize=7,
                    xytext=(5, 5), textcoords="offset points")
    ax.plot([points[i].tokens.mean for i in front], [points[i].accuracy.mean for i in front], "--", color="tab:green",
            marker="D", mfc="none", markersize=11, label="Pareto front (no setting cheaper and more accurate)")
    if price_per_1k_tokens:
        top = ax.secondary_xaxis("top", functions=(lambda t: cost_per_1k_items(t, price_per_1k_tokens),
                                                   lambda c: c / price_per_1k_tokens))
        top.set_xlabel(f"cost per 1,000 items (at {price_per_1k_tokens:g} per 1k generated tokens)")
    ax.set_xlabel("mean generated tokens per completion (thinking + answer), 95% CI")
    ax.set_ylabel(f"{metric}, 95% CI")
    ax.set_title(f"{metric.split('/')[1]}: accuracy against cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
