"""Accuracy with honest error bars, beside the baseline a model gets for free.

The accuracy interval (`accuracy_ci_low` / `accuracy_ci_high`) is a Wilson score interval on a cluster-robust
effective sample size (ACCURACY_CI_METHOD). With k samples per item (eval.num_samples=k) the N = n·k graded
completions are not independent: the samples of one item share its difficulty. The variance of the accuracy is
therefore estimated with items as clusters (the ratio estimator's cluster-robust variance,
sum_i (c_i - p·m_i)^2 / N^2, c_i right answers among the m_i samples of item i); its ratio to the binomial
variance p(1-p)/N is the design effect (Kish), and the interval is Wilson's for N / design effect completions.
Why this and not an item bootstrap: it is deterministic and closed-form (checkable by hand, same numbers on
every run), and Wilson keeps its coverage at 0%, 100% and small n, where a percentile bootstrap collapses to a
zero-width interval. With k = 1 the design effect is exactly 1 and the interval is the plain Wilson interval.
The design effect is kept within [1, k̄] (k̄ = N / n items): between "samples independent" and "every sample of
an item agrees"; at 0% or 100% the data say nothing about within-item agreement, so the conservative end (the
number of items) is used. Both numbers are reported (`accuracy_ci_design_effect`, `accuracy_ci_n_effective`).
"""
from __future__ import annotations

import math
from collections import Counter

ACCURACY_CI_METHOD = "wilson_cluster_robust"  # Wilson interval on the item-clustered effective sample size


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: sane at 0%, 100% and small n (unlike the normal one)."""
    if total == 0:
        return 0.0, 0.0
    return _wilson(successes / total, total, z)


def clustered_interval(item_outcomes: list[list[bool]], z: float = 1.96) -> tuple[float, float, float, float]:
    """(low, high, design effect, effective n) of the accuracy over items with several graded samples each."""
    sizes = [len(outcomes) for outcomes in item_outcomes if outcomes]
    hits = [sum(map(bool, outcomes)) for outcomes in item_outcomes if outcomes]
    total = sum(sizes)
    if total == 0:
        return 0.0, 0.0, 1.0, 0.0
    p = sum(hits) / total
    most = total / len(sizes)  # every sample of an item agrees: only the items count
    if 0 < p < 1:
        robust = sum((c - p * m) ** 2 for c, m in zip(hits, sizes)) / total**2
        design_effect = min(max(robust / (p * (1 - p) / total), 1.0), most)
    else:
        design_effect = most
    n_effective = total / design_effect
    return (*_wilson(p, n_effective, z), design_effect, n_effective)


def is_numeric_answers(answers: list[str]) -> bool:
    """True when every gold answer is a number (GSM8K-like): there is no 'most common answer' to guess."""
    def number(text: str) -> bool:
        try:
            float(str(text).replace(",", "").strip())
        except ValueError:
            return False
        return True

    return bool(answers) and all(number(a) for a in answers)


def majority_baseline(answers: list[str]) -> float:
    """Accuracy of always giving the most common gold answer (PubMedQA test: 'yes' scores 55.2%)."""
    if not answers:
        return 0.0
    return Counter(answers).most_common(1)[0][1] / len(answers)


def majority_vote(extracted: list[str | None]) -> str | None:
    """The most common extracted answer among samples (ties: the first seen); None if nothing was extracted."""
    votes = Counter(a for a in extracted if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in extracted if a is not None and votes[a] == best)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def mean_interval(item_values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Normal 95% interval of a mean over items (item values: each item's mean over its samples, so the samples
    of one item are not counted as independent); a single item gives no spread: (mean, mean)."""
    if not item_values:
        return 0.0, 0.0
    centre = mean(item_values)
    if len(item_values) < 2:
        return centre, centre
    spread = math.sqrt(sum((v - centre) ** 2 for v in item_values) / (len(item_values) - 1))
    half = z * spread / math.sqrt(len(item_values))
    return centre - half, centre + half


def item_means(rows: list[dict], key: str) -> list[float]:
    """Per item (rows grouped by id), the mean of `key` over its samples."""
    by_item: dict[str, list[float]] = {}
    for row in rows:
        by_item.setdefault(row["id"], []).append(float(row[key]))
    return [mean(values) for values in by_item.values()]


def generation_metrics(rows: list[dict]) -> dict[str, float]:
    """What every eval set reports, graded or not (open answers have no accuracy): format, lengths (generated
    tokens, thinking + answer, with a 95% CI over items: the cost axis of the ablation's cost plot), truncation."""
    tokens_low, tokens_high = mean_interval(item_means(rows, "completion_tokens"))
    return {
        "format_rate": mean(r["has_answer_block"] for r in rows),
        "mean_completion_tokens": mean(r["completion_tokens"] for r in rows),
        "mean_completion_tokens_ci_low": tokens_low,
        "mean_completion_tokens_ci_high": tokens_high,
        "mean_thinking_tokens": mean(r["thinking_tokens"] for r in rows),
        "truncation_rate": mean(r["truncated"] for r in rows),
        "mean_waits": mean(r["waits"] for r in rows),
        "n_items": float(len({r["id"] for r in rows})),
    }


def dataset_metrics(rows: list[dict], num_samples: int, answer_type: str | None = None) -> dict[str, float]:
    """Metrics for one eval dataset from its prediction rows (num_samples rows per item, grouped by id).

    answer_type ("numeric" | "yesno" | "choice"): when None, read from the rows' `answer_type` if they have it,
    else numeric when every gold answer is a number. Numeric answers get no majority baseline (NaN)."""
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["id"], []).append(row)
    n_items = len(by_item)
    golds = [group[0]["answer"] for group in by_item.values()]
    answer_type = answer_type or (rows[0].get("answer_type") if rows else None)
    numeric = answer_type == "numeric" if answer_type else is_numeric_answers(golds)
    low, high, design_effect, n_effective = clustered_interval(
        [[r["correct"] for r in group] for group in by_item.values()])
    metrics = {
        "accuracy": mean(r["correct"] for r in rows),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "accuracy_ci_design_effect": design_effect,
        "accuracy_ci_n_effective": n_effective,
        "accuracy_strict": mean(r["correct_strict"] for r in rows),
        # NaN (null in results.json): "always the commonest answer" means nothing for numbers
        "majority_baseline": math.nan if numeric else majority_baseline(golds),
        **generation_metrics(rows),
        **source_metrics(rows),
    }
    if num_samples > 1:
        hits = 0
        for group in by_item.values():
            vote = majority_vote([r["extracted"] for r in group])
            hits += any(r["correct"] for r in group if r["extracted"] == vote) if vote is not None else 0
        metrics[f"maj@{num_samples}"] = hits / n_items if n_items else 0.0
        metrics[f"pass@{num_samples}"] = mean(any(r["correct"] for r in group) for group in by_item.values())
    return metrics


def item_group(row: dict) -> str | None:
    """The sub-source of an item: its meta specialty (e.g. an MMLU subject), else the config part of an id
    '<source>:<part>:<row>' (hub sources with several configs), else None."""
    specialty = (row.get("meta") or {}).get("specialty")
    if specialty:
        return specialty
    parts = str(row["id"]).split(":")
    return parts[1] if len(parts) >= 3 else None


def source_metrics(rows: list[dict]) -> dict[str, float]:
    """Accuracy per sub-source (`by_source/<group>/accuracy`, its CI and n_items), only for a set whose items
    come from several groups (MMLU-medical's six subjects); {} otherwise."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        group = item_group(row)
        if group is not None:
            groups.setdefault(group, []).append(row)
    if len(groups) < 2:
        return {}
    metrics = {}
    for group, members in sorted(groups.items()):
        by_item: dict[str, list[bool]] = {}
        for row in members:
            by_item.setdefault(row["id"], []).append(row["correct"])
        low, high, _, _ = clustered_interval(list(by_item.values()))
        metrics.update({f"by_source/{group}/accuracy": mean(r["correct"] for r in members),
                        f"by_source/{group}/accuracy_ci_low": low, f"by_source/{group}/accuracy_ci_high": high,
                        f"by_source/{group}/n_items": float(len(by_item))})
    return metrics


def source_table(metrics: dict, start: str) -> list[dict]:
    """The per-source accuracies under `start` (`<prefix>/<dataset>/by_source/`) as rows of a W&B table."""
    names = sorted({key[len(start):].rsplit("/", 1)[0] for key in metrics if key.startswith(start)})
    return [{"source": name, **{field: metrics[f"{start}{name}/{field}"]
                                for field in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "n_items")}}
            for name in names]
