"""Schema and coverage of tests/data/real_outputs.jsonl, the hand-labelled set of real model completions.

The grader-agreement test lives elsewhere; this file only guards the data: every line is well formed,
the labels are internally consistent, and the set keeps its promised size and diversity.
"""

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "real_outputs.jsonl"
REQUIRED = {"id", "answer_type", "dataset", "question", "completion", "answer", "model", "family", "prompt_style",
            "source", "human_extracted", "human_correct", "ambiguous", "note"}
OPTIONAL = {"choices", "truncated_middle"}
LETTERS = set("ABCDE")
YESNO = {"yes", "no", "maybe"}


def _rows():
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


ROWS = _rows()


def _value(text):
    """Numeric value of a plain number string such as '18', '-3.5' or '1606.88'."""
    assert re.fullmatch(r"-?\d+(\.\d+)?", text), f"not a plain number: {text!r}"
    return float(text)


def _same(answer_type, extracted, gold):
    if extracted is None:
        return False
    if answer_type == "numeric":
        return math.isclose(_value(extracted), _value(gold))
    return extracted == gold


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_row_schema(row):
    assert REQUIRED <= row.keys(), f"missing {REQUIRED - row.keys()}"
    assert row.keys() <= REQUIRED | OPTIONAL, f"unexpected {row.keys() - REQUIRED - OPTIONAL}"
    kind = row["answer_type"]
    assert kind in {"yesno", "choice", "numeric"}
    assert row["completion"].strip() and row["source"].strip() and row["model"].strip()
    if kind == "yesno":
        assert row["answer"] in YESNO and row["human_extracted"] in YESNO | {None}
    elif kind == "choice":
        choices = row["choices"]
        assert set(choices) <= LETTERS and len(choices) >= 2 and all(str(v).strip() for v in choices.values())
        assert row["answer"] in choices and row["human_extracted"] in set(choices) | {None}
    else:
        _value(row["answer"])
        if row["human_extracted"] is not None:
            _value(row["human_extracted"])
    assert row["human_correct"] is _same(kind, row["human_extracted"], row["answer"])
    assert isinstance(row["ambiguous"], bool)
    if row["ambiguous"]:
        assert row["note"].strip(), "every ambiguous line explains why"
    if row.get("truncated_middle"):
        assert "[…]" in row["completion"]


def test_ids_are_unique():
    assert len({r["id"] for r in ROWS}) == len(ROWS)


def test_size_and_coverage():
    kinds = Counter(r["answer_type"] for r in ROWS)
    assert len(ROWS) >= 450
    assert kinds["yesno"] >= 150 and kinds["choice"] >= 150 and kinds["numeric"] >= 100
    assert sum(r["dataset"] == "pubmedqa" for r in ROWS) >= 150
    assert sum(r["dataset"] == "gsm8k" for r in ROWS) >= 100


def test_diversity():
    assert len({r["family"] for r in ROWS}) >= 5
    assert len({r["prompt_style"] for r in ROWS}) >= 3
    for kind in ("yesno", "choice", "numeric"):
        assert len({r["family"] for r in ROWS if r["answer_type"] == kind}) >= 2, kind


def test_hard_cases_are_present():
    wrong = sum(not r["human_correct"] for r in ROWS) / len(ROWS)
    assert 0.3 <= wrong <= 0.55, f"share incorrect or unanswerable: {wrong:.2f}"
    assert sum(r["human_extracted"] is None for r in ROWS) >= 20
    assert sum(r["ambiguous"] for r in ROWS) >= 5
