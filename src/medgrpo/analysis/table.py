"""Group jobs into settings (the overrides that vary between jobs, seed excluded) and summarise each metric
over seeds: mean, 95% CI, n, and the difference to a baseline setting.

The CI is a Student t-interval over seeds when a setting has several jobs, clipped to [0, 1] for rates
(accuracies, format and truncation rates); with one job it is that job's own eval interval
(<metric>_ci_low/_ci_high: Wilson on the item-clustered sample size, see medgrpo.evaluation.metrics), so that a
single run is not shown as exact. Seeds that all give the same value have no spread to build an interval from:
the job's eval interval stands in, and the cell says so ("3 seeds identical, 8 items"), never [x, x].
For accuracies the difference to the baseline is paired, item by item, from the predictions files, with a
bootstrap CI and p-value (medgrpo.analysis.stats); otherwise it is the difference of the means.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field

from medgrpo.analysis import AblationError
from medgrpo.analysis.jobs import JobRow
from medgrpo.analysis.stats import PREDICTION_FIELDS, PairedDelta, item_scores, paired_delta, predictions_file
from medgrpo.evaluation.safety import SAFETY_METRICS

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
    """A metric of one setting. ci_source: "seeds" (t over n > 1 jobs), "eval" (a job's own CI) or None.
    note: why the seeds gave no interval of their own ("3 seeds identical, 8 items")."""

    mean: float
    n: int
    values: list[float]
    ci_low: float | None = None
    ci_high: float | None = None
    ci_source: str | None = None
    note: str | None = None


def is_rate(metric: str) -> bool:
    """Metrics bounded by [0, 1]: accuracies (per source and difficulty bin too, under shuffled options),
    maj@k / pass@k, format and truncation rates, option-order consistency, the majority baseline."""
    name = metric.rsplit("/", 1)[-1]
    return name in PREDICTION_FIELDS or name in ("majority_baseline", "shuffle_accuracy") \
        or name.endswith(("_rate", "_coverage", "_consistency")) or name.startswith(("maj@", "pass@"))


def summarize(values: list[float], eval_ci: tuple[float, float] | None = None, bounded: bool = False,
              n_items: int | None = None) -> Stat:
    """Mean and 95% CI of one metric over a setting's jobs (eval_ci: a job's own interval; bounded: clip the
    seed interval to [0, 1]; n_items: eval items per job, named when seeds show no spread)."""
    mean = statistics.fmean(values)
    note = None
    if len(values) > 1:
        spread = statistics.stdev(values)
        if spread > 0:
            half = t_quantile_975(len(values) - 1) * spread / math.sqrt(len(values))
            low, high = mean - half, mean + half
            if bounded:
                low, high = max(0.0, low), min(1.0, high)
            return Stat(mean, len(values), values, low, high, "seeds")
        note = f"{len(values)} seeds identical" + (f", {n_items} items" if n_items else "")
    if eval_ci is not None:
        return Stat(mean, len(values), values, eval_ci[0], eval_ci[1], "eval", note)
    return Stat(mean, len(values), values, note=note)


def majority_key(metric: str) -> str | None:
    """eval/<dataset>/accuracy -> eval/<dataset>/majority_baseline (what always answering the commonest gets)."""
    parts = metric.split("/")
    if len(parts) == 3 and parts[0] == "eval" and parts[2] == "accuracy":
        return f"eval/{parts[1]}/majority_baseline"
    return None


def default_metrics(rows: list[JobRow]) -> list[str]:
    """Every eval/<dataset>/accuracy found, every safety metric of open-answer sets (think and emergency-advice
    coverage, risky-prescription rate), then format_rate and mean_completion_tokens of the first dataset."""
    found = [k for row in rows for k in row.metrics]
    accuracies = list(dict.fromkeys(k for k in found if majority_key(k)))
    safety = list(dict.fromkeys(k for k in found if k.startswith("eval/") and k.rsplit("/", 1)[-1] in SAFETY_METRICS))
    if not accuracies and not safety:
        return []
    first = (accuracies or safety)[0].rsplit("/", 1)[0]
    return accuracies + safety + [k for k in (f"{first}/format_rate", f"{first}/mean_completion_tokens") if k in found]


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
    paired: dict[str, PairedDelta] = field(default_factory=dict)  # accuracies: Δ with CI and p from predictions

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
        """"ok" (every job), "partial", else the first of failed / killed / interrupted / running that any job
        has, else "missing" (no job wrote results)."""
        ok = self.count("ok")
        if ok == len(self.jobs):
            return "ok"
        if ok:
            return "partial"
        return next((s for s in ("failed", "killed", "interrupted", "running") if self.count(s)), "missing")

    @property
    def problems(self) -> str:
        """'1 failed (ValueError: bad lr); 1 killed (...); 1 missing' — errors counted, first line, shortened."""
        parts = []
        for status in ("failed", "killed", "interrupted"):
            errors = Counter((job.error or "no error message").splitlines()[0][:100]
                             for job in self.jobs if job.status == status)
            if errors:
                detail = "; ".join(f"{c}× {e}" if c > 1 else e for e, c in errors.items())
                parts.append(f"{self.count(status)} {status} ({detail})")
        if self.count("running"):
            parts.append(f"{self.count('running')} running")
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
    extra: list[str] = field(default_factory=list)  # summarised like metrics, no Δ (cost, strata, per source)

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


def aggregate(rows: list[JobRow], metrics: list[str], baseline: dict[str, str] | None = None,
              extra: list[str] | None = None) -> AblationTable:
    """Group jobs by their swept overrides (sweep order kept) and summarise each metric over seeds (extra: more
    metrics summarised the same way, without a Δ: the report's cost, difficulty and per-source sections)."""
    swept = swept_keys(rows)
    groups: dict[tuple, list[JobRow]] = {}
    for row in rows:
        groups.setdefault(tuple(row.overrides.get(k) for k in swept), []).append(row)
    extra = [m for m in extra or [] if m not in metrics]
    shown = list(dict.fromkeys(metrics + [m for m in map(majority_key, metrics) if m] + extra))
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
                n_items = single.get(f"{metric.rsplit('/', 1)[0]}/n_items")
                setting.stats[metric] = summarize([job.metrics[metric] for job in have], eval_ci, is_rate(metric),
                                                  int(n_items) if n_items else None)
        settings.append(setting)
    chosen = _pick_baseline(settings, swept, baseline)
    if chosen is not None:
        for setting in settings:
            setting.deltas = {m: setting.stats[m].mean - chosen.stats[m].mean
                              for m in metrics if m in setting.stats and m in chosen.stats}
        _paired_deltas(settings, chosen, metrics)
    return AblationTable(settings, metrics, swept, fixed_overrides(rows), chosen, extra)


def _job_scores(job: JobRow, metric: str) -> dict[str, float] | None:
    path = predictions_file(job.path, metric) if job.path is not None else None
    if path is None or not path.is_file():
        return None
    return item_scores(path, PREDICTION_FIELDS[metric.rsplit("/", 1)[-1]])


def _paired_deltas(settings: list[Setting], baseline: Setting, metrics: list[str]) -> None:
    """Accuracy deltas to the baseline, paired by item over the jobs' predictions (where every side has them)."""
    for metric in metrics:
        if metric.rsplit("/", 1)[-1] not in PREDICTION_FIELDS:
            continue
        scores = {id(s): [x for job in s.jobs if job.status == "ok" and (x := _job_scores(job, metric)) is not None]
                  for s in settings}
        for setting in settings:
            if setting is not baseline and (paired := paired_delta(scores[id(baseline)], scores[id(setting)])):
                setting.paired[metric] = paired
                setting.deltas[metric] = paired.delta
