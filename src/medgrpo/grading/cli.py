"""The grader's command line: `python -m medgrpo.grading --answer-type TYPE FILE.jsonl` (alias: medgrpo.grade)."""
from __future__ import annotations

import argparse
import io
import json
import sys

from medgrpo.errors import DataError
from medgrpo.grading.core import grade, options_tuple, reader_for
from medgrpo.grading.labels import ANSWER_TYPES


def grade_jsonl(lines, answer_type: str, source: str = "<stdin>") -> list[dict]:
    """Each JSON line (completion, answer[, choices]) with extracted, correct, correct_strict added.

    Raises DataError naming the line number and field of the first bad line.
    """
    reader_for(answer_type)
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            raise DataError(f"{where}: not valid JSON ({error})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if not isinstance(row.get("completion"), str):
            raise DataError(f"{where}: field 'completion' must be a string, got {row.get('completion')!r:.80}")
        if not isinstance(row.get("answer"), (str, int, float)) or isinstance(row.get("answer"), bool):
            raise DataError(f"{where}: field 'answer' must be a string or a number, got {row.get('answer')!r:.80}")
        try:
            options = options_tuple(row.get("choices"))
        except DataError as error:
            raise DataError(f"{where}: field 'choices': {error}") from None
        try:
            graded = grade(row["completion"], row["answer"], answer_type, options)
        except DataError as error:
            raise DataError(f"{where}: field 'answer': {error}") from None
        rows.append({**row, "extracted": graded.extracted, "correct": graded.correct,
                     "correct_strict": graded.correct_strict})
    return rows


def main(argv: list[str] | None = None, prog: str = "python -m medgrpo.grading") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Grade JSONL lines {completion, answer[, choices: {letter: text}]}: writes them to stdout "
                    "with extracted, correct (lenient) and correct_strict (only an <answer> block counts). "
                    "For --answer-type open, correct and correct_strict are null (an LLM judge grades them).")
    parser.add_argument("--answer-type", required=True, choices=ANSWER_TYPES)
    parser.add_argument("file", help="a JSONL file, or - for stdin")
    args = parser.parse_args(argv)
    try:
        # surrogateescape: bytes that are not UTF-8 reach the grader (which scores them 0) instead of crashing
        if args.file == "-":
            rows = grade_jsonl(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape"),
                               args.answer_type)
        else:
            with open(args.file, encoding="utf-8", errors="surrogateescape") as lines:
                rows = grade_jsonl(lines, args.answer_type, args.file)
    except (DataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in rows:
        sys.stdout.write(json.dumps(row) + "\n")
    print(_summary(rows, args.answer_type), file=sys.stderr)
    return 0


def _summary(rows: list[dict], answer_type: str) -> str:
    if not rows:
        return "graded 0 lines"
    if answer_type == "open":
        found = sum(row["extracted"] is not None for row in rows)
        return f"extracted {found}/{len(rows)} open answers (correctness is for an LLM judge)"
    return (f"graded {len(rows)}: accuracy {sum(r['correct'] for r in rows) / len(rows):.3f} (lenient), "
            f"{sum(r['correct_strict'] for r in rows) / len(rows):.3f} (strict)")
