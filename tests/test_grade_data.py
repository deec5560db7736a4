"""The grader on real data: every GSM8K test solution, every labelled PubMedQA item, every MMLU medical row."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medgrpo.grade import grade

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELS = ("yes", "no", "maybe")


def data_file(relative: str) -> Path:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"real data {path} not present (the shared data folder sits beside the repository)")
    return path


def test_every_gsm8k_test_solution_grades_its_own_answer():
    rows = [json.loads(line) for line in data_file("gsm8k/test.jsonl").read_text().splitlines()]
    assert len(rows) == 1319
    failures = []
    for row in rows:
        working, final_line = row["answer"].rsplit("\n", 1)
        gold = final_line.removeprefix("####").strip()  # with thousands separators: "2,125"
        as_block = f"<reasoning>\n{working}\n</reasoning>\n<answer>\n{gold}\n</answer>\n"
        checks = {
            "final line": grade(final_line, gold, "numeric").correct,
            "whole solution": grade(row["answer"], gold.replace(",", ""), "numeric").correct,
            "answer block": grade(as_block, gold, "numeric").correct_strict,
        }
        failures += [(name, final_line) for name, ok in checks.items() if not ok]
        wrong = str(int(gold.replace(",", "")) + 1)
        if grade(final_line, wrong, "numeric").correct:
            failures.append(("off by one graded correct", final_line))
    assert not failures, failures[:10]


PUBMEDQA_PHRASINGS = [
    "{label}", "{Label}.", "**{LABEL}**", "The answer is {label}.", "Final answer: {Label}",
    "<reasoning>\n{long_answer}\n</reasoning>\n<answer>\n{Label}\n</answer>",
    "<reasoning>\n{long_answer}\n</reasoning>\n<answer>{label}</answer>",
    "{long_answer}\n\nAnswer: {label}",
]


def test_every_pubmedqa_label_graded_right_and_the_other_two_wrong():
    items = json.loads(data_file("pubmedqa/ori_pqal.json").read_text())
    assert len(items) == 1000
    failures = []
    for pubmed_id, item in items.items():
        label = item["final_decision"]
        for phrasing in PUBMEDQA_PHRASINGS:
            completion = phrasing.format(label=label, Label=label.capitalize(), LABEL=label.upper(),
                                         long_answer=item["LONG_ANSWER"])
            if not grade(completion, label, "yesno").correct:
                failures.append((pubmed_id, phrasing, "right label graded wrong"))
            for other in LABELS:
                if other != label and grade(completion, other, "yesno").correct:
                    failures.append((pubmed_id, phrasing, f"graded correct against {other}"))
    assert not failures, failures[:10]


def test_every_mmlu_medical_row_answered_as_letter_and_as_option_text():
    folder = data_file("mmlu_medical/anatomy_test.csv").parent
    rows = []
    for path in sorted(folder.glob("*_test.csv")):
        with path.open(newline="") as handle:
            rows += list(csv.reader(handle))
    assert len(rows) == 1099
    failures = []
    for question, *options, gold in rows:
        text = options["ABCD".index(gold)]
        completions = [f"<answer>{gold}</answer>", f"<answer>({gold})</answer>", f"<answer>{text}</answer>",
                       f"<reasoning>\n{question}\n</reasoning>\n<answer>\n{gold}. {text}\n</answer>",
                       f"The answer is ({gold}).", f"Answer: {text}"]
        for completion in completions:
            if not grade(completion, gold, "choice", options).correct:
                failures.append((question[:60], completion[-80:], "graded wrong"))
            for other in "ABCD":
                if other != gold and grade(completion, other, "choice", options).correct:
                    failures.append((question[:60], completion[-80:], f"graded correct against {other}"))
    assert not failures, failures[:10]
