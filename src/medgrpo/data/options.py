"""Multiple-choice parsing: options embedded in question text, and gold answers given as letter, index or text.

    stem, options = split_embedded_options("Which ...?\nA) Insulin\nB) Glucagon\nC) ...")
    letter = answer_letter("B) Glucagon", options)          # -> "B"

Embedded options are lettered markers in order A, B, C, ... either at line starts ("A) x", "A. x", "(A) x",
"A: x", "a) x") or inline ("... ? A) x B) y C) z"). Line-start markers win; inline markers must share one style.
The longest A-B-C... chain is taken (latest start on ties), which skips stray letters in the stem such as
"vitamin A." or "hepatitis B:" that are not followed by the rest of the sequence.
"""
from __future__ import annotations

import re

from medgrpo.grading.labels import LETTERS  # the one definition, shared with grading
_LINE_MARKER = re.compile(r"^[ \t]*[\(\[]?([A-Ja-j])[\)\]\.:\-][ \t]*(?=\S)", re.MULTILINE)
_INLINE_MARKER = re.compile(r"(?:(?<=\s)|^)([\(\[]?)([A-Ja-j])([\)\]\.:])\s+(?=\S)")
_OPTIONS_LABEL = re.compile(r"(?:\n|\s)*(?:options|choices|answer choices)\s*:?\s*$", re.IGNORECASE)
_ANSWER_LEAD = re.compile(
    r"^\s*(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*[\(\[]?([A-Ja-j])(?![A-Za-z])",
    re.IGNORECASE)
_LETTER_START = re.compile(r"^\s*[\(\[]?([A-Ja-j])(?:[\)\]\.:\-,]|\s|$)(?!\w{2,}\s)")
_ONLY_LETTER = re.compile(r"^\s*[\(\[]?([A-Ja-j])[\)\]\.:]?\s*$")


def _chains(markers: list[tuple[int, int, str]]) -> list[list[tuple[int, int, str]]]:
    """All A, B, C, ... chains with increasing positions; markers are (start, end, letter)."""
    chains = []
    for i, first in enumerate(markers):
        if first[2] != "A":
            continue
        chain = [first]
        for m in markers[i + 1:]:
            if m[2] == LETTERS[len(chain)] and m[0] >= chain[-1][1]:
                chain.append(m)
                if len(chain) == len(LETTERS):
                    break
        chains.append(chain)
    return chains


def _best_chain(text: str) -> list[tuple[int, int, str]] | None:
    line = [(m.start(), m.end(), m.group(1).upper()) for m in _LINE_MARKER.finditer(text)]
    best = max(_chains(line), key=lambda c: (len(c), c[0][0]), default=None)
    if best and len(best) >= 2:
        return best
    styles: dict[tuple[str, str], list] = {}
    for m in _INLINE_MARKER.finditer(text):
        style = (m.group(1), m.group(3), m.group(2).islower())  # one chain never mixes "A)" with "b." or "(C)"
        styles.setdefault(style, []).append((m.start(), m.end(), m.group(2).upper()))
    candidates = [c for markers in styles.values() for c in _chains(markers)]
    best = max(candidates, key=lambda c: (len(c), c[0][0]), default=None)
    return best if best and len(best) >= 2 else None


def split_embedded_options(text: str) -> tuple[str, list[str]]:
    """(question stem, option texts in letter order). Raises ValueError when no A, B, ... options are found."""
    chain = _best_chain(text)
    if chain is None:
        raise ValueError("no lettered options (A) ..., B) ...) found in the question text")
    stem = _OPTIONS_LABEL.sub("", text[: chain[0][0]]).strip()
    options = []
    for k, (_, end, _) in enumerate(chain):
        stop = chain[k + 1][0] if k + 1 < len(chain) else len(text)
        option = text[end:stop]
        if k + 1 == len(chain):  # the last option ends at a blank line or an "Answer:" line, if any
            option = re.split(r"\n\s*\n|\n\s*(?:correct\s+)?answer\s*:", option, maxsplit=1, flags=re.IGNORECASE)[0]
        options.append(" ".join(option.split()).rstrip(",;"))
    if not stem:
        raise ValueError("the question text has options but no question before them")
    if any(not o for o in options):
        raise ValueError(f"option {LETTERS[options.index('')]} is empty")
    return stem, options


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def answer_letter(answer, options: list[str], index_base: int = 0) -> str:
    """The gold letter for `answer`: an int index (counting from index_base), a digit string, a letter
    ("B", "b", "(B)", "B) text", "Answer: B") or an option's text. Raises ValueError if none fits."""
    n = len(options)
    if isinstance(answer, bool) or answer is None:
        raise ValueError(f"answer {answer!r} is not a letter, index or option text")
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().lstrip("-").isdigit()):
        index = int(answer) - index_base
        if not 0 <= index < n:
            raise ValueError(f"answer index {answer!r} is out of range for {n} options (counting from {index_base})")
        return LETTERS[index]
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"answer {answer!r} is empty or not text")
    text = answer.strip()
    by_text = [LETTERS[i] for i, o in enumerate(options) if _norm(o) == _norm(text)]
    match = _ONLY_LETTER.match(text) or _ANSWER_LEAD.match(text)
    if match is None and not by_text:
        match = _LETTER_START.match(text)
    if match:
        letter = match.group(1).upper()
        if LETTERS.index(letter) >= n:
            raise ValueError(f"answer {answer!r} names option {letter} but there are only {n} options")
        return letter
    if len(by_text) == 1:
        return by_text[0]
    starts = [LETTERS[i] for i, o in enumerate(options) if _norm(text).startswith(_norm(o)) and _norm(o)]
    if len(starts) == 1:
        return starts[0]
    raise ValueError(f"answer {answer!r} matches no option letter or text")
