"""Option-order robustness (eval.shuffle_options=k): each multiple-choice item is asked again under k seeded
permutations of its options, and every answer is mapped back to the original option before it is compared.

    items = permuted_items(dataset, k)            # k copies of each item, options reordered, prompt re-rendered
    rows = [map_back(row, item) for row, item in zip(graded_rows, items)]
    robustness_metrics(rows)  # {"shuffle_accuracy": ..., "shuffle_consistency": ..., "shuffle_n_items": ...}

Accuracy that moves when the options move is position bias, not knowledge. Consistency is the share of items
whose (mapped-back) answer is the same under every permutation, an unanswered item counting as never the same.
A permutation is seeded by the item id and its index, so every run and every setting sees the same orders.
"""
from __future__ import annotations

import logging
import random

from medgrpo.data.options import LETTERS
from medgrpo.data.render import format_options
from medgrpo.errors import ConfigError
from medgrpo.evaluation.metrics import clustered_interval, mean

log = logging.getLogger(__name__)


def shuffle_count(eval_cfg) -> int:
    """eval.shuffle_options as a count (0 = off); a clear error for anything else."""
    value = eval_cfg.get("shuffle_options", 0) or 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError("eval.shuffle_options", f"expected a whole number >= 0 (0 = off), got {value!r}")
    return value


def permutation(item_id: str, n_options: int, index: int) -> list[int]:
    """order[shown position] = original option index; deterministic per (item, index), a string-seeded Random."""
    order = list(range(n_options))
    random.Random(f"{item_id}:{index}").shuffle(order)
    return order


def permute_item(item: dict, order: list[int]) -> dict:
    """The item with its options shown in `order`: choices, gold letter and the user message's options block."""
    choices = list(item["choices"])
    shown = [choices[i] for i in order]
    before, after = format_options(choices), format_options(shown)
    prompt = [dict(message) for message in item["prompt"]]
    user = next((m for m in prompt if m["role"] == "user" and before in m["content"]), None)
    if user is None:
        raise ValueError(f"item {item['id']}: its options block is not in the prompt, cannot reorder it")
    user["content"] = user["content"].replace(before, after)
    gold = LETTERS[order.index(LETTERS.index(item["answer"]))]
    return {**item, "prompt": prompt, "choices": shown, "answer": gold, "order": order}


def permuted_items(dataset, k: int) -> list[dict]:
    """k permuted copies of every choice item, item-major (item 0 perm 0..k-1, item 1 ...). An item whose prompt
    does not show its options as one block (a template without {options}) is left out, with a warning: the
    robustness metrics are optional and must not fail the evaluation."""
    items, skipped = [], 0
    for item in dataset:
        try:
            items += [permute_item(item, permutation(item["id"], len(item["choices"]), j)) for j in range(k)]
        except ValueError:
            skipped += 1
    if skipped:
        log.warning("eval.shuffle_options: %d item(s) do not show their options as a block in the prompt and are "
                    "not shuffled (the source template needs {options})", skipped)
    return items


def map_back(row: dict, item: dict) -> dict:
    """A prediction row graded against the permuted item, its letters mapped back to the original options."""
    def original(letter):
        if letter is None or letter not in LETTERS[: len(item["order"])]:
            return letter
        return LETTERS[item["order"][LETTERS.index(letter)]]

    return {**row, "extracted": original(row["extracted"]), "answer": original(row["answer"]),
            "shown_order": "".join(LETTERS[i] for i in item["order"])}


def robustness_metrics(rows: list[dict]) -> dict[str, float]:
    """shuffle_accuracy (over all permutations, with its item-clustered CI), shuffle_consistency, n items."""
    by_item: dict[str, list[dict]] = {}
    for row in rows:
        by_item.setdefault(row["id"], []).append(row)
    low, high, _, _ = clustered_interval([[r["correct"] for r in group] for group in by_item.values()])
    same = [len({r["extracted"] for r in group}) == 1 and group[0]["extracted"] is not None
            for group in by_item.values()]
    return {"shuffle_accuracy": mean(r["correct"] for r in rows), "shuffle_accuracy_ci_low": low,
            "shuffle_accuracy_ci_high": high, "shuffle_consistency": mean(same), "shuffle_n_items": float(len(same))}
