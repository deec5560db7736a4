"""Yes/no/maybe answers (PubMedQA): a label word standing as an answer, never a word inside another word ("know")
or the determiner "no" of an idiom ("no doubt", "no difference"), never a negated or rejected label ("not yes")."""
from __future__ import annotations

import re

from medgrpo.errors import DataError
from medgrpo.grading.labels import YESNO_LABELS as LABELS
from medgrpo.grading.text import AMBIGUOUS, clean, final_sentences, first_line, first_sentence, rejected

_MAX_MENTIONS = 64
_LABEL_WORD = re.compile(r"\b(yes|no|maybe)\b(?![-'’]\w)", re.IGNORECASE)
# "no" followed by a word is a determiner ("no doubt", "no significant difference"), unless that word starts a
# clause after a missing comma ("No it does not", "No, the").
_DETERMINER = re.compile(
    r"[ \t]+(?!(?:it|there|this|that|these|those|they|we|i|he|she|you|the|because|since|as|but|and|not|in|for|"
    r"according|based|given|however|so|therefore|thus)\b)[^\W\d_]", re.IGNORECASE)


def normalise_gold(answer, options: tuple[str, ...] = ()) -> str:
    label = str(answer).strip().lower()
    if label not in LABELS:
        raise DataError(f"yes/no answer {answer!r} is not one of {', '.join(LABELS)}")
    return label


def labels_in(text: str) -> tuple[list[str], bool]:
    """The labels the text asserts (first-seen order, at most two: more is a hedge anyway) and whether it mentions
    any label word standing as a label, asserted or rejected."""
    asserted, mentioned = [], False
    for count, match in enumerate(_LABEL_WORD.finditer(text)):
        label = match[1].lower()
        if count == _MAX_MENTIONS or len(asserted) > 1:
            break  # a wall of labels is no answer, and costs no more than this
        if label in asserted or (label == "no" and _DETERMINER.match(text, match.end())):
            continue
        mentioned = True
        if not rejected(text, match.start(), match.end()):
            asserted.append(label)
    return asserted, mentioned


def parse(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """A label given as the answer: "Yes", "**NO.**", "Answer: maybe", "Yes, because the trial showed ...".

    An answer that asserts two different labels ("yes or no", "Yes. Or maybe no") is ambiguous: graders must
    not reward a hedge. A rejected label ("Yes, not no") is not asserted.
    """
    text = clean(text).lower()
    if text in LABELS:
        return text
    asserted, _ = labels_in(text)
    if len(asserted) > 1:
        return AMBIGUOUS
    if asserted and text.startswith(asserted[0]) and not text[len(asserted[0])].isalnum():
        return asserted[0]
    return None


def scan(text: str, options: tuple[str, ...] = (), announced: bool = False) -> str | object | None:
    """The one label the text asserts (None if none, ambiguous if several differ)."""
    asserted, _ = labels_in(text)
    if len(asserted) > 1:
        return AMBIGUOUS
    return asserted[0] if asserted else None


def fallback(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """Free text without an answer statement: a label opening the text ("No. The cohort was too small ..."),
    else the label the conclusion asserts ("So, yes."); an opening and a conclusion that differ are a hedge."""
    line = first_line(text)
    opening = parse(first_sentence(line))
    if opening is None:
        opening = parse(line)
    conclusion = _conclusion(text)
    if opening is None or opening is AMBIGUOUS:  # a first line that discusses labels is not an opening answer
        return conclusion
    return opening if conclusion in (None, opening) else AMBIGUOUS


def is_valid(extracted: str, options: tuple[str, ...] = ()) -> bool:
    return extracted in LABELS


def _conclusion(text: str) -> str | object | None:
    """The label the last sentence asserts, reading back over closing sentences that only reject a label."""
    for sentence in final_sentences(text):
        asserted, mentioned = labels_in(sentence)
        if asserted:
            return asserted[0] if len(asserted) == 1 else AMBIGUOUS
        if not mentioned:
            return None
    return None
