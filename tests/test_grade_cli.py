"""The grader's CLI: `python -m medgrpo.grading` and its alias `python -m medgrpo.grade` behave identically."""
from __future__ import annotations

import json
import subprocess
import sys

import medgrpo.grade
import medgrpo.grading

LINES = [
    {"id": "n1", "completion": "<think>\n9 * 2 = 18\n</think>\nThe answer is 1.8e1.", "answer": 18},
    {"id": "n2", "completion": "<answer>not 18</answer>", "answer": "18"},
]
OPEN = [{"id": "o1", "completion": "<think>\nfluids\n</think>\nDrink water and rest.", "answer": "Hydration"}]


def run_cli(module: str, answer_type: str, rows: list[dict]) -> subprocess.CompletedProcess:
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    return subprocess.run([sys.executable, "-m", module, "--answer-type", answer_type, "-"], input=lines,
                          capture_output=True, text=True, timeout=60, check=False)


def test_grading_module_is_the_cli_and_grade_is_an_identical_alias():
    new, alias = run_cli("medgrpo.grading", "numeric", LINES), run_cli("medgrpo.grade", "numeric", LINES)
    assert new.returncode == alias.returncode == 0, new.stderr + alias.stderr
    assert new.stdout == alias.stdout and new.stderr == alias.stderr
    rows = [json.loads(line) for line in new.stdout.splitlines()]
    assert [(r["id"], r["extracted"], r["correct"], r["correct_strict"]) for r in rows] == [
        ("n1", "18", True, False), ("n2", None, False, False)]
    assert "accuracy 0.500 (lenient), 0.000 (strict)" in new.stderr


def test_cli_accepts_open_answers_and_leaves_correctness_to_a_judge():
    result = run_cli("medgrpo.grading", "open", OPEN)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert (row["extracted"], row["correct"], row["correct_strict"]) == ("Drink water and rest.", None, None)
    assert "LLM judge" in result.stderr


def test_cli_rejects_unknown_answer_type_naming_the_choices():
    result = run_cli("medgrpo.grading", "free_text", LINES)
    assert result.returncode == 2 and "numeric" in result.stderr and "open" in result.stderr


def test_alias_reexports_the_same_objects():
    for name in ("grade", "extract", "completion_text", "is_valid_answer", "Graded", "grade_jsonl", "main"):
        assert getattr(medgrpo.grade, name) is getattr(medgrpo.grading, name)
    assert medgrpo.grading.ANSWER_TYPES == ("numeric", "yesno", "choice", "open")
