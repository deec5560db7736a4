"""Grade a completion against a gold answer: the one grader behind the rewards, the evaluation and this CLI.

    from medgrpo.grade import grade
    graded = grade(completion, "18", "numeric")          # answer types: numeric, yesno, choice
    graded.correct_strict   # format-gated: the single <answer> block holds the right answer
    graded.correct          # lenient: the final answer found as a careful human grader would

    python -m medgrpo.grade --answer-type choice predictions.jsonl > graded.jsonl   ("-" reads stdin)

How the final answer is found
- strict: the completion has exactly one <answer>...</answer> block (and no other answer tag); its content is
  read by the answer type's reader (medgrpo.grading). Nothing outside the block counts.
- lenient, when there is any <answer> tag: every answer block must give the same answer (blocks that disagree,
  an empty block, or a block cut off mid-tag: no answer).
- lenient, without answer tags: only the text after the reasoning (</reasoning> or </think>) is read; an answer
  that appears only inside the reasoning is working, not an answer, and a reasoning block that never closes
  (a truncated completion) gives no answer. In that text the LAST answer statement counts ("the answer is X",
  "Final answer: X", "Answer: X", "#### X", "\\boxed{X}"); without one, the last number (numeric), or the sole
  label word / option the final sentence names (yesno, choice).
- never credit for hedging: two different labels, letters or numbers offered as the answer give no answer.
Malformed input (empty, truncated, megabytes long, lone surrogates, not a string) is graded as no answer, never
an exception; an invalid gold answer or answer type raises DataError (a data problem, not a model problem).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from functools import lru_cache

from medgrpo.errors import DataError
from medgrpo.grading import ANSWER_TYPES, READERS
from medgrpo.grading.text import (
    AMBIGUOUS,
    answer_segments,
    first_sentence,
    last_statement,
    text_after_reasoning,
)
from medgrpo.prompting import ANSWER_CLOSE, ANSWER_OPEN


@dataclass(frozen=True)
class Extraction:
    """The answers a completion gives (canonical strings: "18", "yes", "B"), without a gold answer."""

    extracted: str | None         # lenient
    extracted_strict: str | None  # from the single <answer> block only
    has_answer_block: bool        # at least one complete <answer>...</answer>


@dataclass(frozen=True)
class Graded:
    extracted: str | None
    correct: bool
    extracted_strict: str | None
    correct_strict: bool
    has_answer_block: bool


def grade(completion, answer, answer_type: str, choices=None) -> Graded:
    """Grade one completion. choices: option texts in letter order, or a dict letter -> text (choice items)."""
    options = options_tuple(choices)
    gold = _gold(str(answer), answer_type, options)
    found = extract(completion, answer_type, options)
    return Graded(extracted=found.extracted, correct=found.extracted == gold,
                  extracted_strict=found.extracted_strict, correct_strict=found.extracted_strict == gold,
                  has_answer_block=found.has_answer_block)


def extract(completion, answer_type: str, choices=None) -> Extraction:
    """The lenient and strict answers of a completion (a string or a chat list of messages)."""
    reader = _reader(answer_type)
    options = options_tuple(choices)
    text = completion_text(completion)
    if ANSWER_OPEN not in text:
        region = text_after_reasoning(text)
        lenient = None if region is None else _read_free(region, reader, options)
        return Extraction(extracted=lenient, extracted_strict=None, has_answer_block=False)
    segments = answer_segments(text)
    strict = None
    single_block = len(segments) == 1 and segments[0][1] and text.count(ANSWER_CLOSE) == 1
    if single_block:
        strict = _read_block(segments[0][0], reader, options)
    lenient = strict if single_block else _read_blocks(segments, reader, options)
    return Extraction(extracted=lenient, extracted_strict=strict,
                      has_answer_block=any(closed for _, closed in segments))


def is_valid_answer(extracted: str | None, answer_type: str, choices=None) -> bool:
    """Whether an extracted answer is a possible label for the item (a number; yes/no/maybe; an option letter)."""
    return extracted is not None and _reader(answer_type).is_valid(extracted, options_tuple(choices))


def completion_text(completion) -> str:
    """The text of a completion given as a string or as TRL's chat list [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        return "".join(message["content"] for message in completion
                       if isinstance(message, dict) and isinstance(message.get("content"), str))
    return ""


def options_tuple(choices) -> tuple[str, ...]:
    """Option texts in letter order from a list, a tuple or a dict letter -> text; () for no choices."""
    if choices is None:
        return ()
    if isinstance(choices, tuple) and all(isinstance(choice, str) for choice in choices):
        return choices
    if isinstance(choices, dict):
        letters = sorted(str(key).strip().upper() for key in choices)
        if letters != [chr(ord("A") + index) for index in range(len(letters))]:
            raise DataError(f"choices keys must be the letters A, B, ... without gaps, got {sorted(choices)}")
        by_letter = {str(key).strip().upper(): text for key, text in choices.items()}
        choices = [by_letter[letter] for letter in letters]
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, (str, int, float)) for c in choices):
        raise DataError(f"choices must be a list of option texts or an object letter -> text, got {choices!r}")
    return tuple(str(choice) for choice in choices)


def _reader(answer_type: str):
    try:
        return READERS[answer_type]
    except (KeyError, TypeError):
        raise DataError(f"answer_type {answer_type!r} is not one of {', '.join(ANSWER_TYPES)}") from None


@lru_cache(maxsize=65536)
def _gold(answer: str, answer_type: str, options: tuple[str, ...]) -> str:
    return _reader(answer_type).normalise_gold(answer, options)


def _read_blocks(segments: list[tuple[str, bool]], reader, options) -> str | None:
    """Lenient reading of several or unclosed answer blocks: they must all give the same answer."""
    answers = set()
    for index, (content, closed) in enumerate(segments):
        cut_mid_tag = not closed and index == len(segments) - 1 and "<" in content
        answer = None if cut_mid_tag else _read_block(content, reader, options)
        if answer is None:
            return None
        answers.add(answer)
    return answers.pop() if len(answers) == 1 else None


def _read_block(content: str, reader, options) -> str | None:
    """An answer block's content: the answer itself, else its answer statement, else the one answer it mentions."""
    answer = reader.parse(content, options)
    if answer is None:
        statement = last_statement(content)
        if statement is not None:
            answer = _read_statement(statement, reader, options)
    if answer is None:
        answer = reader.scan(content, options)
    return None if answer is AMBIGUOUS else answer


def _read_free(region: str, reader, options) -> str | None:
    """Free text: the last answer statement, else the answer type's fallback (last number, final sentence)."""
    statement = last_statement(region)
    answer = None if statement is None else _read_statement(statement, reader, options)
    if answer is None:
        answer = reader.fallback(region, options)
    return None if answer is AMBIGUOUS else answer


def _read_statement(statement: str, reader, options):
    answer = reader.parse(first_sentence(statement), options)
    return reader.parse(statement, options) if answer is None else answer


# ---------------------------------------------------------------------------------------------------- CLI

def grade_jsonl(lines, answer_type: str, source: str = "<stdin>") -> list[dict]:
    """Each JSON line (completion, answer[, choices]) with extracted, correct, correct_strict added.

    Raises DataError naming the line number and field of the first bad line.
    """
    _reader(answer_type)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medgrpo.grade",
        description="Grade JSONL lines {completion, answer[, choices: {letter: text}]}: writes them to stdout "
                    "with extracted, correct (lenient) and correct_strict (only an <answer> block counts).")
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
    if rows:
        print(f"graded {len(rows)}: accuracy {sum(r['correct'] for r in rows) / len(rows):.3f} (lenient), "
              f"{sum(r['correct_strict'] for r in rows) / len(rows):.3f} (strict)", file=sys.stderr)
    return 0


__all__ = ["Extraction", "Graded", "completion_text", "extract", "grade", "is_valid_answer", "options_tuple"]

if __name__ == "__main__":
    sys.exit(main())
