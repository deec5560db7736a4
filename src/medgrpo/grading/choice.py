"""Multiple-choice answers: one option letter ("B", "(B)", "B.", "B)", "Answer: B", "option B") or, when the
options are known, the text of exactly one option. Two letters, or a letter whose text names another option,
is a hedge and gets no credit.
"""
from __future__ import annotations

import re
from functools import lru_cache

from medgrpo.errors import DataError
from medgrpo.grading.text import AMBIGUOUS, clean, final_sentence

LETTERS = "ABCDEFGHIJ"
_LETTER_ONLY = re.compile(r"[(\[]?([A-Ja-j])[)\]]?[.):]?")
# A letter with a separator, then more text: "B. Kidney", "(B) Kidney", "B: the kidney". A bare "A " is not a
# letter: it is the article of "A protruding mandible".
_LETTER_THEN_TEXT = re.compile(r"(?:[(\[]([A-J])[)\]]|([A-J])[.):])[.:]?\s+(\S.*)", re.DOTALL)
_LETTER_BECAUSE = re.compile(r"([A-J])\s+(?:because|since|as)\b")
_HEDGE_START = re.compile(r"(?i:or|and|,|/|&)\s*[(\[]?[A-J]\b")
# Another letter offered after the first: "A. Or maybe B", "A (but possibly C)".
_HEDGED_LETTER = re.compile(r"\b(?i:or|and|maybe|perhaps|possibly|also)\s+(?:(?i:maybe|perhaps|possibly|also)\s+)?"
                            r"[(\[]?([A-J])\b")
# How free text points at an option. Upper case only: a lone "a" is an article.
_MENTION = re.compile(
    r"[(\[]([A-J])[)\]]"
    r"|\b(?:[Oo]ption|[Cc]hoice|[Aa]nswer)\s+[(\[]?([A-J])\b"
    r"|\*\*([A-J])[.)]?\*\*"
    r"|\b([A-J])\)"
    r"|\b([A-J])\s+is\s+(?:the\s+)?(?:correct|right|best|answer)\b"
    r"|^[ \t*_]*([A-J])[ \t*_]*[.):]?[ \t*_]*$",
    re.MULTILINE,
)
_MAX_SPANS = 16


def normalise_gold(answer, options: tuple[str, ...] = ()) -> str:
    match = _LETTER_ONLY.fullmatch(str(answer).strip())
    letter = match[1].upper() if match else None
    if letter is None or letter not in _valid_letters(options):
        raise DataError(f"choice answer {answer!r} is not one of the letters {_valid_letters(options)}")
    return letter


def parse(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """The option chosen by an answer: a letter pattern or one option's exact text (case and punctuation aside)."""
    text = clean(text)
    match = _LETTER_ONLY.fullmatch(text)
    if match:
        return _checked(match[1].upper(), options)
    if options:
        named = _option_named(text, options)
        if named is not None:
            return named
    match = _LETTER_THEN_TEXT.match(text)
    if match:
        letter, rest = match[1] or match[2], match[3]
        named = _option_named(rest, options) if options else None
        if named == letter:
            return _checked(letter, options)  # "B. <text of option B>"
        if named is not None or _offers_another_letter(rest, letter):
            return AMBIGUOUS  # "B. <text of option C>", "A, or B", "A. Or maybe B"
        return _checked(letter, options)
    match = _LETTER_BECAUSE.match(text)
    return _checked(match[1], options) if match else None


def scan(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """The one option the text points at: letter mentions ("(B)", "option B", "B is correct"), else option texts."""
    valid = _valid_letters(options)
    letters = {next(group for group in match.groups() if group) for match in _MENTION.finditer(text)}
    letters &= set(valid)
    if len(letters) > 1:
        return AMBIGUOUS
    if letters:
        return letters.pop()
    return _option_mentioned(text, options) if options else None


def fallback(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """Free text without an answer statement: the option the final sentence points at ("So (B).")."""
    return scan(final_sentence(text), options)


def is_valid(extracted: str, options: tuple[str, ...] = ()) -> bool:
    return extracted in _valid_letters(options)


def _offers_another_letter(text: str, letter: str) -> bool:
    if _HEDGE_START.match(text) or _LETTER_ONLY.fullmatch(clean(text)):
        return True
    others = {next(group for group in match.groups() if group) for match in _MENTION.finditer(text)}
    others |= {match[1] for match in _HEDGED_LETTER.finditer(text)}
    return bool(others - {letter})


def _valid_letters(options: tuple[str, ...]) -> str:
    return LETTERS[:len(options)] if options else LETTERS


def _checked(letter: str, options: tuple[str, ...]) -> str | None:
    return letter if letter in _valid_letters(options) else None


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .,;:!?*_'\"`")


@lru_cache(maxsize=4096)
def _normalised_options(options: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_norm(option) for option in options)


def _option_named(text: str, options: tuple[str, ...]) -> str | object | None:
    key = _norm(text)
    hits = [letter for letter, option in zip(LETTERS, _normalised_options(options)) if option and option == key]
    if len(hits) > 1:
        return AMBIGUOUS
    return hits[0] if hits else None


def _option_mentioned(text: str, options: tuple[str, ...]) -> str | object | None:
    """The option whose text occurs (as whole words) in the text; an option only contained in a longer mentioned
    option ("paralysis" inside "paralysis and loss of taste") does not count separately."""
    haystack = " ".join(text.lower().split())
    spans = {letter: _whole_word_spans(haystack, option)
             for letter, option in zip(LETTERS, _normalised_options(options)) if option}
    found = {letter for letter, own in spans.items()
             if any(not _inside_another_option(span, letter, spans) for span in own)}
    if len(found) > 1:
        return AMBIGUOUS
    return found.pop() if found else None


def _inside_another_option(span: tuple[int, int], letter: str, spans: dict) -> bool:
    start, end = span
    return any(other_start <= start and end <= other_end and (other_start, other_end) != span
               for other, other_spans in spans.items() if other != letter
               for other_start, other_end in other_spans)


def _whole_word_spans(haystack: str, needle: str) -> list[tuple[int, int]]:
    """Where needle occurs as whole words; at most _MAX_SPANS (bounds the nesting check on huge inputs)."""
    spans, start = [], haystack.find(needle)
    while start >= 0 and len(spans) < _MAX_SPANS:
        end = start + len(needle)
        before_ok = start == 0 or not haystack[start - 1].isalnum()
        after_ok = end == len(haystack) or not haystack[end].isalnum()
        if before_ok and after_ok:
            spans.append((start, end))
        start = haystack.find(needle, start + 1)
    return spans
