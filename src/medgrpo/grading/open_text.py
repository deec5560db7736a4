"""Open answers (free text with a reference answer): the rules only find the final answer text; whether it is
right is for an LLM judge to say elsewhere, so grade() leaves correct and correct_strict as None."""
from __future__ import annotations

from medgrpo.errors import DataError


def normalise_gold(answer, options: tuple[str, ...] = ()) -> str:
    reference = str(answer).strip()
    if not reference:
        raise DataError("open answer (the reference answer) is empty")
    return reference


def parse(text: str, options: tuple[str, ...] = ()) -> str | None:
    """The whole answer text, stripped; None when empty."""
    return text.strip() or None


def is_valid(extracted: str, options: tuple[str, ...] = ()) -> bool:
    return bool(extracted.strip())
