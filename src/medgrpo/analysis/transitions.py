"""Which items a budget-forcing setting turns right or wrong (budget=extend sweeps: does "Wait" help?).

    pairs = transitions(table, "eval/gsm8k/accuracy", out_dir)   # consecutive settings in sweep order
    transitions_markdown(pairs)

For each pair of consecutive settings (sweep order: e.g. budget.num_waits=1 then 2) and each item both were
evaluated on, the item is right when most of its samples are correct (mean `correct` > 0.5, medgrpo.analysis.stats
item_scores), using the first finished seed of each setting. Items right -> wrong and wrong -> right are listed,
each linking to the line of the later setting's predictions file (relative link, plus the item id to search for).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medgrpo.analysis.stats import item_scores, predictions_file
from medgrpo.analysis.table import AblationTable, Setting

MAX_LISTED = 20  # items listed per direction in the Markdown (the counts are always complete)


@dataclass
class Transition:
    before: Setting
    after: Setting
    right_to_wrong: list[str]
    wrong_to_right: list[str]
    n_items: int
    before_file: Path
    after_file: Path


def is_budget_sweep(table: AblationTable) -> bool:
    """A sweep that varies the budget group or its keys, or runs every job with budget=extend."""
    return any(k == "budget" or k.startswith("budget.") for k in table.swept) or table.fixed.get("budget") == "extend"


def _first_predictions(setting: Setting, metric: str) -> Path | None:
    for job in setting.jobs:
        if job.status == "ok" and job.path is not None:
            path = predictions_file(job.path, metric)
            if path is not None and path.is_file():
                return path
    return None


def item_transitions(before: dict[str, float], after: dict[str, float]) -> tuple[list[str], list[str], int]:
    """(right -> wrong ids, wrong -> right ids, shared items) between two {id: item score} maps; right: score > 0.5."""
    shared = sorted(set(before) & set(after))
    worse = [i for i in shared if before[i] > 0.5 >= after[i]]
    better = [i for i in shared if before[i] <= 0.5 < after[i]]
    return worse, better, len(shared)


def transitions(table: AblationTable, metric: str) -> list[Transition]:
    """Transitions between consecutive settings that both have predictions for the metric."""
    found = [(s, path) for s in table.settings if (path := _first_predictions(s, metric)) is not None]
    pairs = []
    for (before, before_file), (after, after_file) in zip(found, found[1:]):
        worse, better, shared = item_transitions(item_scores(before_file), item_scores(after_file))
        pairs.append(Transition(before, after, worse, better, shared, before_file, after_file))
    return pairs


def _links(ids: list[str], path: Path, out_dir: Path) -> str:
    if not ids:
        return "none"
    link = Path(os.path.relpath(path, out_dir)).as_posix().replace(" ", "%20")
    shown = ", ".join(f"[`{item}`]({link})" for item in ids[:MAX_LISTED])
    return shown + (f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else "")


def transitions_markdown(pairs: list[Transition], metric: str, out_dir: Path) -> str:
    """A Markdown section: per pair, counts and the items (linked to the later setting's predictions)."""
    if not pairs:
        return ""
    lines = [f"### Item transitions: {metric}", "",
             "| from → to | items | right → wrong | wrong → right | net |", "|---|---|---|---|---|"]
    for pair in pairs:
        net = len(pair.wrong_to_right) - len(pair.right_to_wrong)
        lines.append(f"| {pair.before.label} → {pair.after.label} | {pair.n_items} | {len(pair.right_to_wrong)} | "
                     f"{len(pair.wrong_to_right)} | {net:+d} |".replace("\n", " "))
    lines.append("")
    for pair in pairs:
        lines += [f"- {pair.before.label} → {pair.after.label}: right → wrong: "
                  f"{_links(pair.right_to_wrong, pair.after_file, out_dir)}; wrong → right: "
                  f"{_links(pair.wrong_to_right, pair.after_file, out_dir)}"]
    lines += ["", "Right: most of an item's samples correct; first finished seed of each setting; links open the "
              "later setting's predictions file (search for the id)."]
    return "\n".join(lines)
