"""Yes/no/maybe answers (PubMedQA): a label word standing as an answer, never a word inside another word ("know")
or the determiner "no" of an idiom ("no doubt", "no difference"), never a negated or rejected label ("not yes").
When the prompt showed the labels as options ("A) yes B) no C) maybe"), an option letter answers with its label;
a letter and a label word that disagree are a hedge."""
from __future__ import annotations

import re

from medgrpo.errors import DataError
from medgrpo.grading import choice
from medgrpo.grading.labels import LETTERS
from medgrpo.grading.labels import YESNO_LABELS as LABELS
from medgrpo.grading.text import AMBIGUOUS, REJECTED, clean, final_sentences, first_line, first_sentence, rejected

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
    """parse_label, or the label of the option letter the answer gives (when the item shows options)."""
    letter = choice.parse(text, options) if options else None
    return _agreeing(parse_label(text), letter, options)


def scan(text: str, options: tuple[str, ...] = (), announced: bool = False) -> str | object | None:
    """The one label the text asserts, as a word or (items with options) as an option letter."""
    letter = choice.scan(text, options, announced, texts=False) if options else None
    return _agreeing(scan_labels(text), letter, options)


def fallback(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """fallback_labels, or the label of the option letter that opens or concludes the text."""
    letter = choice.fallback(text, options, texts=False) if options else None
    return _agreeing(fallback_labels(text), letter, options)


def _agreeing(label, letter, options: tuple[str, ...]):
    """One answer from a label word and an option letter: either alone, both when they agree, else a hedge."""
    if isinstance(letter, str):
        letter = options[LETTERS.index(letter)].strip().lower()
        if letter not in LABELS:
            letter = None
    answers = [answer for answer in (label, letter) if answer is not None and answer is not REJECTED]
    if not answers:
        return REJECTED if REJECTED in (label, letter) else None
    return answers[0] if len(answers) == 1 or answers[0] == answers[1] else AMBIGUOUS


def parse_label(text: str) -> str | object | None:
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


def scan_labels(text: str) -> str | object | None:
    """The one label word the text asserts (None if none, ambiguous if several differ, REJECTED if it only
    rejects labels)."""
    asserted, mentioned = labels_in(text)
    if len(asserted) > 1:
        return AMBIGUOUS
    return asserted[0] if asserted else REJECTED if mentioned else None


def fallback_labels(text: str) -> str | object | None:
    """Free text without an answer statement: a label opening the text ("No. The cohort was too small ..."),
    else the label the conclusion asserts ("So, yes."); an opening and a conclusion that differ are a hedge."""
    line = first_line(text)
    opening = parse_label(first_sentence(line))
    if opening is None:
        opening = parse_label(line)
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
