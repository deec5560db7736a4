"""Accuracy with honest error bars, beside the baseline a model gets for free."""
from __future__ import annotations

import math
from collections import Counter


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: sane at 0%, 100% and small n (unlike the normal one)."""
    if total == 0:
        return 0.0, 0.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


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


def dataset_metrics(rows: list[dict], num_samples: int) -> dict[str, float]:
    """Metrics for one eval dataset from its prediction rows (num_samples rows per item, grouped by id)."""
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["id"], []).append(row)
    n_items = len(by_item)
    correct = sum(r["correct"] for r in rows)
    low, high = wilson_interval(correct, len(rows))
    metrics = {
        "accuracy": correct / len(rows) if rows else 0.0,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "accuracy_strict": mean(r["correct_strict"] for r in rows),
        "format_rate": mean(r["has_answer_block"] for r in rows),
        "majority_baseline": majority_baseline([group[0]["answer"] for group in by_item.values()]),
        "mean_completion_tokens": mean(r["completion_tokens"] for r in rows),
        "mean_thinking_tokens": mean(r["thinking_tokens"] for r in rows),
        "truncation_rate": mean(r["truncated"] for r in rows),
        "mean_waits": mean(r["waits"] for r in rows),
        "n_items": float(n_items),
    }
    if num_samples > 1:
        hits = 0
        for group in by_item.values():
            vote = majority_vote([r["extracted"] for r in group])
            hits += any(r["correct"] for r in group if r["extracted"] == vote) if vote is not None else 0
        metrics[f"maj@{num_samples}"] = hits / n_items if n_items else 0.0
        metrics[f"pass@{num_samples}"] = mean(any(r["correct"] for r in group) for group in by_item.values())
    return metrics
