"""grade() and extract(): where the final answer of a completion is, read by its answer type's reader.

The rules are documented in the package docstring (medgrpo/grading/__init__.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from medgrpo.errors import DataError
from medgrpo.grading import choice, numeric, open_text, yesno
from medgrpo.grading.labels import ANSWER_TYPES, LETTERS
from medgrpo.grading.text import (
    AMBIGUOUS,
    REJECTED,
    answer_segments,
    first_sentence,
    follow_up_starts,
    json_answers,
    last_statement,
    normalise,
    reasoning_spans,
    statements,
    text_after_reasoning,
    unescape_line_breaks,
)
from medgrpo.prompting import ANSWER_CLOSE

_MAX_JSON_ANSWERS = 64
READERS = {"numeric": numeric, "yesno": yesno, "choice": choice, "open": open_text}
assert tuple(READERS) == ANSWER_TYPES  # labels.ANSWER_TYPES is the one list of answer types


@dataclass(frozen=True)
class Extraction:
    """The answers a completion gives (canonical strings: "18", "yes", "B"), without a gold answer."""

    extracted: str | None         # lenient
    extracted_strict: str | None  # from the single <answer> block only
    has_answer_block: bool        # at least one complete <answer>...</answer> outside the reasoning


@dataclass(frozen=True)
class Graded:
    extracted: str | None
    correct: bool | None          # None for "open" answers: an LLM judge decides elsewhere
    extracted_strict: str | None
    correct_strict: bool | None
    has_answer_block: bool


def grade(completion, answer, answer_type: str, choices=None) -> Graded:
    """Grade one completion. choices: option texts in letter order, or a dict letter -> text (choice items)."""
    options = options_tuple(choices)
    gold = _gold(str(answer), answer_type, options)
    found = _extract(completion, reader_for(answer_type), options)
    if answer_type == "open":
        return Graded(extracted=found.extracted, correct=None, extracted_strict=found.extracted_strict,
                      correct_strict=None, has_answer_block=found.has_answer_block)
    return Graded(extracted=found.extracted, correct=found.extracted == gold,
                  extracted_strict=found.extracted_strict, correct_strict=found.extracted_strict == gold,
                  has_answer_block=found.has_answer_block)


def extract(completion, answer_type: str, choices=None) -> Extraction:
    """The lenient and strict answers of a completion (a string or a chat list of messages)."""
    return _extract(completion, reader_for(answer_type), options_tuple(choices))


def _extract(completion, reader, options: tuple[str, ...]) -> Extraction:
    text = unescape_line_breaks(normalise(completion_text(completion)))  # a dump's "B\\n\\n" reads as B
    spans = reasoning_spans(text)
    for at in follow_up_starts(text, spans[0][1] if spans else 0):
        head = text[:at]
        lenient, strict, has_block = _read(head, reasoning_spans(head), reader, options)
        if lenient is not None:  # answered (or hedged) before it: what follows is made up and never pays
            break
    else:
        lenient, strict, has_block = _read(text, spans, reader, options)
    return Extraction(extracted=_answer(lenient), extracted_strict=_answer(strict), has_answer_block=has_block)


def _read(text: str, spans: list[tuple[int, int]], reader, options) -> tuple[object, object, bool]:
    """(lenient, strict, has_answer_block), the answers still raw: AMBIGUOUS and REJECTED are kept."""
    segments = answer_segments(text, spans)
    if not segments:
        region = text_after_reasoning(text, spans)
        return (None if region is None else _read_free(region, reader, options)), None, False
    strict = None
    single_block = len(segments) == 1 and segments[0][1] and _count_outside(text, ANSWER_CLOSE, spans) == 1
    if single_block:
        strict = _read_block(segments[0][0], reader, options)
    lenient = strict if single_block else _read_blocks(segments, reader, options)
    return lenient, strict, any(closed for _, closed in segments)


def _count_outside(text: str, tag: str, spans: list[tuple[int, int]]) -> int:
    count = text.count(tag)
    for start, end in spans:
        count -= text.count(tag, start, end)
    return count


def _answer(raw) -> str | None:
    return None if raw is AMBIGUOUS or raw is REJECTED else raw


def is_valid_answer(extracted: str | None, answer_type: str, choices=None) -> bool:
    """Whether an extracted answer is a possible label for the item (a number; yes/no/maybe; an option letter;
    any non-empty text for open answers)."""
    return extracted is not None and reader_for(answer_type).is_valid(extracted, options_tuple(choices))


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
    if isinstance(choices, dict):
        letters = sorted(str(key).strip().upper() for key in choices)
        if letters != list(LETTERS[:len(letters)]):
            raise DataError(f"choices keys must be the letters A, B, ... without gaps, got {sorted(choices)}")
        by_letter = {str(key).strip().upper(): text for key, text in choices.items()}
        choices = [by_letter[letter] for letter in letters]
    if not isinstance(choices, (list, tuple)):
        raise DataError(f"choices must be a list of option texts or an object letter -> text, got {choices!r}")
    try:
        return _option_texts(tuple(choices))
    except TypeError:  # unhashable: not a list of texts
        raise DataError(f"choices must be a list of option texts, got {choices!r}") from None


@lru_cache(maxsize=4096)
def _option_texts(choices: tuple) -> tuple[str, ...]:
    if not all(isinstance(choice, (str, int, float)) for choice in choices):
        raise DataError(f"choices must be a list of option texts or an object letter -> text, got {choices!r}")
    return tuple(normalise(str(choice)) for choice in choices)


def reader_for(answer_type: str):
    """The reader module of an answer type; DataError naming the known types otherwise."""
    try:
        return READERS[answer_type]
    except (KeyError, TypeError):
        raise DataError(f"answer_type {answer_type!r} is not one of {', '.join(ANSWER_TYPES)}") from None


@lru_cache(maxsize=65536)
def _gold(answer: str, answer_type: str, options: tuple[str, ...]) -> str:
    return reader_for(answer_type).normalise_gold(normalise(answer), options)


def _read_blocks(segments: list[tuple[str | None, bool]], reader, options):
    """Lenient reading of several or unclosed answer blocks: they must all give the same answer."""
    answers = []
    for content, _ in segments:  # stop at the first block without an answer: megabytes of tags stay cheap
        answer = None if content is None else _read_block(content, reader, options)
        if _answer(answer) is None or (answers and answer != answers[0]):
            return AMBIGUOUS if answer is AMBIGUOUS or answers else None
        answers.append(answer)
    return answers[0]


def _agreed(answers: list):
    """The answer all of several answers give; None if one gives none, AMBIGUOUS if they differ."""
    if any(_answer(answer) is None for answer in answers):
        return AMBIGUOUS if AMBIGUOUS in answers else None
    return answers[0] if all(answer == answers[0] for answer in answers) else AMBIGUOUS


def _read_block(content: str, reader, options):
    """An answer block's content: the answer itself, else its answer statement, else the one answer it asserts."""
    answer = reader.parse(content, options)
    if reader is open_text:
        return answer
    if answer is None:
        statement = last_statement(content)
        if statement is not None:
            answer = _read_statement(statement, reader, options)
    if answer is None:
        answer = reader.scan(content, options)
    return answer


def _read_free(region: str, reader, options):
    """Free text: its JSON answers (which must agree), else the last answer statement, else the answer type's
    fallback (opening answer, conclusion). A statement that only rejects answers is no answer: no fallback."""
    if reader is open_text:
        return reader.parse(region)
    values = json_answers(region)
    if len(values) > _MAX_JSON_ANSWERS:
        return AMBIGUOUS  # a wall of JSON answers is no answer
    if values:
        return _agreed([_read_statement(value, reader, options) for value in values])
    announced = statements(region)
    if announced and not announced[0].strip():
        return None  # the text ends at its answer cue ("Therefore, the answer is"): cut off before answering
    answer, rejecting = None, []
    for statement in announced:  # the last one counts; one that only rejects gives way to the one before it
        answer = _read_statement(statement, reader, options)
        if answer is not REJECTED:
            break
        rejecting.append(statement)
    if isinstance(answer, str) and any(_names(statement, answer) for statement in rejecting):
        return REJECTED  # "The answer is B. ... The answer is not B.": retracted
    return reader.fallback(region, options) if answer is None else answer


def _names(text: str, answer: str) -> bool:
    """Whether the text names this answer (a letter, a label, a number) as a word."""
    flags = re.IGNORECASE if answer.isalpha() and len(answer) > 1 else 0  # labels in any case, letters as written
    return re.search(rf"(?<![\w.]){re.escape(answer)}(?![\w])", text, flags) is not None


def _read_statement(statement: str, reader, options):
    """An announced answer: its first sentence, the whole statement, else the one answer it asserts."""
    answer = reader.parse(first_sentence(statement), options)
    if answer is None:
        answer = reader.parse(statement, options)
    if answer is None:
        answer = reader.scan(statement, options, announced=True)
    return answer
