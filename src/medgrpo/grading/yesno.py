"""Yes/no/maybe answers (PubMedQA): one label word, whole words only ("know" is not "no")."""
from __future__ import annotations

import re

from medgrpo.errors import DataError
from medgrpo.grading.text import AMBIGUOUS, clean, final_sentence

LABELS = ("yes", "no", "maybe")
_LABEL_WORD = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def normalise_gold(answer, options: tuple[str, ...] = ()) -> str:
    label = str(answer).strip().lower()
    if label not in LABELS:
        raise DataError(f"yes/no answer {answer!r} is not one of {', '.join(LABELS)}")
    return label


def parse(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """A label given as the answer: "Yes", "**NO.**", "Answer: maybe", "Yes, because the trial showed ...".

    An answer that names two different labels ("yes or no", "Yes, there is no difference") is ambiguous:
    graders must not reward a hedge, and an answer block is meant to hold the answer only.
    """
    text = clean(text).lower()
    if text in LABELS:
        return text
    labels = {word.lower() for word in _LABEL_WORD.findall(text)}
    if len(labels) > 1:
        return AMBIGUOUS
    if labels:
        label = labels.pop()
        if text.startswith(label) and not text[len(label)].isalnum():
            return label
    return None


def scan(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """The one label word mentioned in the text (None if none, ambiguous if several differ)."""
    labels = {word.lower() for word in _LABEL_WORD.findall(text)}
    if len(labels) > 1:
        return AMBIGUOUS
    return labels.pop() if labels else None


def fallback(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """Free text without an answer statement: a sole label word in the final sentence ("So, yes.")."""
    return scan(final_sentence(text))


def is_valid(extracted: str, options: tuple[str, ...] = ()) -> bool:
    return extracted in LABELS
