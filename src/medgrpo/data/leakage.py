"""Leakage guard: no evaluation item may appear in training, by id or by normalised question text.

    report = check_leakage(train, {"pubmedqa": ds, ...}, allow=False, namespaces={"pubmedqa_pool": "pubmed", ...})

Ids are compared only between sources sharing an id namespace (PubMed ids across PubMedQA configs, MedMCQA
ids across its splits); row-number ids mean nothing across datasets. Question text is compared after
lower-casing and collapsing punctuation and whitespace, so "Is X safe?" and "is x  safe" collide.
With overlap and allow=False it raises DataError with counts and examples.
"""
from __future__ import annotations

import re

from datasets import Dataset

from medgrpo.errors import DataError

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
MAX_EXAMPLES = 5


def normalize_question(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _upstream(row_id: str) -> str:
    return row_id.split(":", 1)[1] if ":" in row_id else row_id


def check_leakage(train: Dataset | dict, evals: dict[str, Dataset | dict], allow: bool,
                  namespaces: dict[str, str | None] | None = None) -> dict:
    """Overlap between training rows and each evaluation set. `train`/`evals` need columns id, source, question
    (Datasets or dicts of lists). namespaces: source name -> id namespace (None: ids not comparable)."""
    namespaces = namespaces or {}
    train_ids: dict[tuple[str, str], str] = {}
    for row_id, source in zip(train["id"], train["source"]):
        if namespaces.get(source):
            train_ids[(namespaces[source], _upstream(row_id))] = row_id
    train_text = {normalize_question(q): row_id for q, row_id in zip(train["question"], train["id"])}
    report: dict = {"allowed": allow, "overlap": 0, "per_eval": {}, "examples": []}
    for name, ev in evals.items():
        by_id = by_text = 0
        leaked: set[str] = set()
        for row_id, source, question in zip(ev["id"], ev["source"], ev["question"]):
            ns = namespaces.get(source)
            hit = train_ids.get((ns, _upstream(row_id))) if ns else None
            if hit:
                by_id += 1
            text_hit = train_text.get(normalize_question(question))
            if text_hit:
                by_text += 1
            if (hit or text_hit) and row_id not in leaked:
                leaked.add(row_id)
                if len(report["examples"]) < MAX_EXAMPLES:
                    report["examples"].append({"eval": row_id, "train": hit or text_hit,
                                               "by": "id" if hit else "text"})
        report["per_eval"][name] = {"items": len(ev["id"]), "leaked": len(leaked), "by_id": by_id, "by_text": by_text}
        report["overlap"] += len(leaked)
    if report["overlap"] and not allow:
        detail = ", ".join(f"{n}: {r['leaked']} (id {r['by_id']}, text {r['by_text']})"
                           for n, r in report["per_eval"].items() if r["leaked"])
        raise DataError(f"leakage: {report['overlap']} evaluation items also appear in the training data ({detail}); "
                        f"examples: {report['examples']}. Remove them from the training sources (ids.exclude) or "
                        "set data.allow_leakage=true to run anyway.")
    return report
