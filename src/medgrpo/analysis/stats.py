"""Paired differences between two settings of a sweep, from the jobs' predictions/<dataset>.jsonl files.

    delta = paired_delta(baseline_scores, setting_scores)   # lists (one per seed/job) of {item id: score}

Both settings were evaluated on the same items, so the difference is measured item by item: an item hard for
both cancels out, which makes the interval much narrower than one built from two independent means. The
bootstrap resamples items (shared by both settings: the pairing) and, within each setting, its seeds (jobs),
so that both sources of variation are in the interval. Estimate: mean over seeds and items of the setting
minus the same for the baseline, on the items every job of both has. 95% CI: percentiles 2.5 and 97.5 of the
resampled differences. p-value (two-sided, H0: no difference): the share of resampled differences, centred on
the estimate, at least as far from it as the estimate is from 0 — (1 + count) / (1 + resamples), so never 0.
An item's score is the mean of its samples (`correct` of each line; the samples of one item share its id).
Resampling uses a fixed seed: the same predictions always give the same table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESAMPLES = 10_000
ALPHA = 0.05
PREDICTION_FIELDS = {"accuracy": "correct", "accuracy_strict": "correct_strict"}
METHOD = (f"paired bootstrap over items and seeds ({RESAMPLES:,} resamples, items paired by id; percentile 95% CI; "
          "two-sided p from the centred bootstrap distribution)")
_CHUNK = 1_000  # resamples per block: bounds memory at 1,000 x items floats


def predictions_file(job_dir: Path, metric: str) -> Path | None:
    """eval/<dataset>/accuracy -> <job>/predictions/<dataset>.jsonl (eval_base -> predictions_base, ...);
    None for a metric that is not an accuracy over prediction lines."""
    parts = metric.split("/")
    if len(parts) != 3 or not parts[0].startswith("eval") or parts[2] not in PREDICTION_FIELDS:
        return None
    return Path(job_dir) / ("predictions" + parts[0].removeprefix("eval")) / f"{parts[1]}.jsonl"


def item_scores(path: Path, field: str = "correct") -> dict[str, float]:
    """{item id: mean of `field` over the item's samples} of one predictions file."""
    totals: dict[str, list[float]] = {}
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.strip():
                row = json.loads(line)
                totals.setdefault(str(row["id"]), []).append(float(bool(row[field])))
    return {item: sum(values) / len(values) for item, values in totals.items()}


@dataclass(frozen=True)
class PairedDelta:
    """A setting minus the baseline on their shared items."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n_items: int
    n_seeds: tuple[int, int]  # (baseline jobs, setting jobs)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def paired_delta(baseline: list[dict[str, float]], other: list[dict[str, float]], resamples: int = RESAMPLES,
                 seed: int = 0) -> PairedDelta | None:
    """The paired bootstrap described in the module docstring; None when the two share no item."""
    if not baseline or not other:
        return None
    common = sorted(set.intersection(*(set(scores) for scores in baseline + other)))
    if not common:
        return None
    base = np.array([[scores[item] for item in common] for scores in baseline])  # seeds x items
    setting = np.array([[scores[item] for item in common] for scores in other])
    estimate = float(setting.mean() - base.mean())
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        items = rng.multinomial(len(common), np.full(len(common), 1 / len(common)), size=size) / len(common)
        base_weights = rng.multinomial(len(base), np.full(len(base), 1 / len(base)), size=size) / len(base)
        weights = rng.multinomial(len(setting), np.full(len(setting), 1 / len(setting)), size=size) / len(setting)
        diffs.append(((weights @ setting - base_weights @ base) * items).sum(axis=1))
    diffs = np.concatenate(diffs)
    low, high = np.percentile(diffs, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    far = np.abs(diffs - estimate) >= abs(estimate) - 1e-12  # tolerance: resampled sums carry rounding
    p_value = (1 + int(far.sum())) / (1 + resamples)
    return PairedDelta(estimate, float(low), float(high), min(1.0, p_value), len(common), (len(base), len(setting)))
