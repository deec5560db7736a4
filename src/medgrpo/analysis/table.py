"""Group jobs into settings (the overrides that vary between jobs, seed excluded) and summarise each metric
over seeds: mean, 95% CI, n, and the difference to a baseline setting.

The CI is a Student t-interval over seeds when a setting has several jobs; with one job it is that job's own
eval interval (<metric>_ci_low/_ci_high, Wilson over eval items), so that a single run is not shown as exact.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

from medgrpo.analysis import AblationError
from medgrpo.analysis.jobs import JobRow

# Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30; beyond, a Cornish-Fisher series (error < 1e-4).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """t(0.975, df): the multiplier of the standard error for a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def short_value(value: str) -> str:
    """'1.2520653814999467e-05' -> '1.252e-05'; anything else unchanged."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and not value.isdigit() else value


@dataclass
class Stat:
    """A metric of one setting. ci_source: "seeds" (t over n > 1 jobs), "eval" (one job's own CI) or None."""

    mean: float
    n: int
    values: list[float]
    ci_low: float | None = None
    ci_high: float | None = None
    ci_source: str | None = None


def summarize(values: list[float], eval_ci: tuple[float, float] | None = None) -> Stat:
    """Mean and 95% CI of one metric over a setting's jobs (eval_ci: the single job's own interval)."""
    mean = statistics.fmean(values)
    if len(values) > 1:
        half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        return Stat(mean, len(values), values, mean - half, mean + half, "seeds")
    if eval_ci is not None:
        return Stat(mean, 1, values, eval_ci[0], eval_ci[1], "eval")
    return Stat(mean, len(values), values)


def majority_key(metric: str) -> str | None:
    """eval/<dataset>/accuracy -> eval/<dataset>/majority_baseline (what always answering the commonest gets)."""
    parts = metric.split("/")
    if len(parts) == 3 and parts[0] == "eval" and parts[2] == "accuracy":
        return f"eval/{parts[1]}/majority_baseline"
    return None


def default_metrics(rows: list[JobRow]) -> list[str]:
    """Every eval/<dataset>/accuracy found, then format_rate and mean_completion_tokens of the first dataset."""
    found = [k for row in rows for k in row.metrics]
    accuracies = list(dict.fromkeys(k for k in found if majority_key(k)))
    if not accuracies:
        return []
    first = accuracies[0].rsplit("/", 1)[0]
    return accuracies + [k for k in (f"{first}/format_rate", f"{first}/mean_completion_tokens") if k in found]


def swept_keys(rows: list[JobRow]) -> list[str]:
    """Override keys whose value differs between jobs (a job without the key counts as the default), no seed."""
    keys = list(dict.fromkeys(k for row in rows for k in row.overrides if k != "seed"))
    return [k for k in keys if len({row.overrides.get(k) for row in rows}) > 1]


def fixed_overrides(rows: list[JobRow]) -> dict[str, str]:
    """Overrides every job shares (shown above the table: they are the context, not the ablation)."""
    if not rows:
        return {}
    first = rows[0].overrides
    return {k: v for k, v in first.items() if k != "seed" and all(row.overrides.get(k) == v for row in rows)}


@dataclass
class Setting:
    """One combination of swept values, its jobs, and per metric its Stat and difference to the baseline."""

    params: dict[str, str | None]
    jobs: list[JobRow]
    stats: dict[str, Stat] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """'lora.rank=32, grpo.learning_rate=1.252e-05' (long floats, e.g. Optuna's, rounded for reading)."""
        if not self.params:
            return "all jobs"
        return ", ".join(f"{k}={'(default)' if v is None else short_value(v)}" for k, v in self.params.items())

    def count(self, status: str) -> int:
        return sum(job.status == status for job in self.jobs)

    @property
    def status(self) -> str:
        """"ok" (every job), "partial", "failed" (no result, some failed) or "missing" (no job wrote results)."""
        ok, failed = self.count("ok"), self.count("failed")
        if ok == len(self.jobs):
            return "ok"
        if ok:
            return "partial"
        return "failed" if failed else "missing"

    @property
    def problems(self) -> str:
        """'1 failed (ValueError: bad lr); 1 missing' — error messages counted, first line, shortened."""
        errors = Counter((job.error or "no error message").splitlines()[0][:100]
                         for job in self.jobs if job.status == "failed")
        parts = []
        if errors:
            detail = "; ".join(f"{c}× {e}" if c > 1 else e for e, c in errors.items())
            parts.append(f"{self.count('failed')} failed ({detail})")
        if self.count("missing"):
            parts.append(f"{self.count('missing')} missing (no result: crashed hard or still running)")
        return "; ".join(parts)


@dataclass
class AblationTable:
    settings: list[Setting]
    metrics: list[str]
    swept: list[str]
    fixed: dict[str, str]
    baseline: Setting | None

    @property
    def absent_metrics(self) -> list[str]:
        """Requested metrics that no job reported."""
        return [m for m in self.metrics if not any(m in s.stats for s in self.settings)]


def _pick_baseline(settings: list[Setting], swept: list[str], wanted: dict[str, str] | None) -> Setting | None:
    if not wanted:
        return next((s for s in settings if s.stats), None)  # the first setting in sweep order with results
    unknown = [k for k in wanted if k not in swept]
    if unknown:
        raise AblationError(f"--baseline names {unknown}, which are not swept (swept: {swept or 'nothing'})")
    matches = [s for s in settings if all(s.params.get(k) == v for k, v in wanted.items())]
    if len(matches) != 1:
        options = " | ".join(s.label for s in settings)
        raise AblationError(f"--baseline matches {len(matches)} settings, it must match one; settings: {options}")
    return matches[0]


def aggregate(rows: list[JobRow], metrics: list[str], baseline: dict[str, str] | None = None) -> AblationTable:
    """Group jobs by their swept overrides (sweep order kept) and summarise each metric over seeds."""
    swept = swept_keys(rows)
    groups: dict[tuple, list[JobRow]] = {}
    for row in rows:
        groups.setdefault(tuple(row.overrides.get(k) for k in swept), []).append(row)
    shown = list(dict.fromkeys(metrics + [m for m in map(majority_key, metrics) if m]))
    settings = []
    for values, jobs in groups.items():
        setting = Setting(dict(zip(swept, values)), jobs)
        ok = [job for job in jobs if job.status == "ok"]
        for metric in shown:
            have = [job for job in ok if metric in job.metrics]
            if have:
                single = have[0].metrics
                eval_ci = (single[f"{metric}_ci_low"], single[f"{metric}_ci_high"]) \
                    if f"{metric}_ci_low" in single and f"{metric}_ci_high" in single else None
                setting.stats[metric] = summarize([job.metrics[metric] for job in have], eval_ci)
        settings.append(setting)
    chosen = _pick_baseline(settings, swept, baseline)
    if chosen is not None:
        for setting in settings:
            setting.deltas = {m: setting.stats[m].mean - chosen.stats[m].mean
                              for m in metrics if m in setting.stats and m in chosen.stats}
    return AblationTable(settings, metrics, swept, fixed_overrides(rows), chosen)
