"""Label balancing, how much of each pool the mix can use, and the weighted, seeded interleave.

    order = balanced_order(labels, "downsample", rng)          # row indices, labels equalised, shuffled
    needed = rows_needed({"a": 5000, "b": 900}, {"a": 0.7, "b": 0.3}, "first_exhausted", train_size=None)
    mixed, effective = mix_sources({"a": ds_a, "b": ds_b}, {"a": 0.7, "b": 0.3}, seed, "first_exhausted", None)

Balancing: pqa_artificial is ~92% "yes"; unbalanced, a policy that always answers "yes" collects most of the
correctness reward. downsample keeps each label's count at the rarest label's (fewer, unique items);
upsample repeats the rarer labels' items up to the commonest label's count (all items, some seen repeatedly).

rows_needed: with first_exhausted the mix stops when its scarcest pool (size / weight) runs out, so larger
pools contribute only about weight x total rows. Preparation tokenises just those (plus a margin) instead of,
say, all 211k pqa_artificial prompts when ~34k can be drawn; the length-filter report says how many it checked.
"""
from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
from datasets import Dataset, interleave_datasets

log = logging.getLogger(__name__)


def label_counts(labels: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(labels).items()))


def balanced_order(labels: list[str], mode: str, rng: np.random.Generator) -> list[int]:
    """Shuffled row indices with every label at the same count (mode: none | downsample | upsample)."""
    if mode == "none":
        return rng.permutation(len(labels)).tolist()
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    sizes = [len(v) for v in by_label.values()]
    target = min(sizes) if mode == "downsample" else max(sizes)
    chosen = []
    for label in sorted(by_label):
        idx = np.asarray(by_label[label])
        if len(idx) >= target:
            chosen.append(rng.choice(idx, size=target, replace=False))
        else:  # upsample: every item once, then random repeats
            chosen.append(np.concatenate([idx, rng.choice(idx, size=target - len(idx), replace=True)]))
    order = np.concatenate(chosen)
    rng.shuffle(order)
    return order.tolist()


def rows_needed(sizes: dict[str, int], weights: dict[str, float], stopping_strategy: str,
                train_size: int | None, margin: float = 1.0) -> dict[str, int]:
    """Rows each pool must supply (after filtering) so that the mix never exhausts it early."""
    if stopping_strategy != "first_exhausted" and train_size is None:
        return dict(sizes)  # oversampling strategies walk through every pool
    total = min(sizes[n] / weights[n] for n in weights)
    if train_size is not None:
        total = min(total, train_size) if stopping_strategy == "first_exhausted" else train_size
    needed = {}
    for name, w in weights.items():
        expected = w * total
        # a binomial count: mean w*T, sd <= sqrt(w*T); 6 sd + 5% + 64 rows almost never runs short
        want = math.ceil(margin * (1.05 * expected + 6 * math.sqrt(expected) + 64))
        needed[name] = min(sizes[name], want)
    return needed


def mix_sources(pools: dict[str, Dataset], weights: dict[str, float], seed: int, stopping_strategy: str,
                train_size: int | None) -> tuple[Dataset, dict[str, int]]:
    """Interleave the pools (already shuffled) with probabilities = weights; returns the mix and rows per source.

    first_exhausted (default) stops when any pool runs out, so the proportions hold; all_exhausted repeats
    smaller pools until every item was used once. train_size caps the mix (the first N interleaved rows).
    """
    names = list(weights)
    if len(names) == 1:
        mixed = pools[names[0]]
    else:
        mixed = interleave_datasets([pools[n] for n in names], probabilities=[weights[n] for n in names],
                                    seed=seed, stopping_strategy=stopping_strategy)
    if train_size is not None:
        if train_size > len(mixed):
            log.warning("data.train_size=%d but the mix has only %d rows (%s stops early); using all of them",
                        train_size, len(mixed), stopping_strategy)
        mixed = mixed.select(range(min(train_size, len(mixed))))
    effective = Counter(mixed["source"][:])
    return mixed, {n: effective.get(n, 0) for n in names}
