"""Multiple-choice answers: one option letter ("B", "(B)", "B.", "B)", "D, X-linked dominant", "OPTION B IS
CORRECT") or, when the options are known, the text of exactly one option. Two asserted letters, or a letter whose
text names another option, is a hedge and gets no credit; a rejected letter ("C, not D", "Option C is incorrect")
is never the answer and is no hedge.
"""
from __future__ import annotations

import re
from functools import lru_cache

from medgrpo.errors import DataError
from medgrpo.grading.labels import LETTERS
from medgrpo.grading.text import AMBIGUOUS, REJECTED, clean, final_sentences, first_line, first_sentence, rejected

_LETTER_ONLY = re.compile(r"[(\[]?([A-Ja-j])[)\]]?[.):]?")
# A letter with a separator, then more text: "B. Kidney", "(B) Kidney", "B: the kidney", "D, X-linked". A bare
# "A " is not a letter: it is the article of "A protruding mandible".
_LETTER_THEN_TEXT = re.compile(r"(?:[(\[]([A-J])[)\]]|([A-J])[.):,])[.:]?\s+(\S.*)", re.DOTALL)
_LETTER_BECAUSE = re.compile(r"([A-J])\s+(?:because|since|as)\b")
# What follows a first letter when another is offered: "A, or B", "A / C", "A. B" (bare second letter).
_HEDGE_START = re.compile(r"(?i:or|and|,|/|&)\s*[(\[]?[A-J]\b|[(\[]?[A-J]\b(?![ \t]+[a-z])")
# Another letter offered after the first: "A. Or maybe B", "A (but possibly C)".
_HEDGED_LETTER = re.compile(r"\b(?i:or|and|maybe|perhaps|possibly|also)\s+(?:(?i:maybe|perhaps|possibly|also)\s+)?"
                            r"[(\[]?([A-J])\b")
# How free text points at an option. Letters upper case only (a lone "a" is an article); keywords any case.
_MENTION = re.compile(
    r"[(\[]([A-J])[)\]]"
    r"|\b(?i:option|choice|answer)\s+[(\[]?([A-J])\b"
    r"|\b(?i:choose|chose|select|selected|pick|picked|go\s+with|opt\s+for)\s+[(\[]?([A-J])\b(?![ \t]+[a-z])"
    r"|\*\*([A-J])[.):]?\*\*"
    r"|\b([A-J])\)"
    r"|\b([A-J])\s+(?i:is\s+(?:the\s+)?(?:correct|right|best|answer|most\s+likely|most\s+appropriate))\b"
    r"|^[ \t*_]*([A-J])[ \t*_]*[.):]?[ \t*_]*$",
    re.MULTILINE,
)
# In an announced answer ("the answer is not B, it is C") a bare capital letter is a mention too, unless a
# lower-case word follows it the way one follows an article or a pronoun ("A patient", "I think").
_BARE_CAPITAL = re.compile(r"(?<![\w'’-])([A-J])(?![\w'’-])")  # any capital letter standing alone
_BARE = re.compile(_BARE_CAPITAL.pattern + r"(?![ \t]+(?!(?:because|since|as|is|and|or|not|but|rather)\b)[a-z])")
# Lines that start with letters, as when a model lists the options: then a first line "A. ..." is no answer.
_OPTION_LINE = re.compile(r"^[ \t*_#]*[(\[]?([A-J])[.):\]]", re.MULTILINE)
# "the best initial test ... would be <option text>": the last resort of free text without a conclusion.
_SUPERLATIVE = re.compile(r"\b(?:best|most\s+(?:likely|appropriate|probable|accurate|effective|common|useful)|correct)"
                          r"\b[^.\n]{0,80}?\b(?:is|would\s+be|will\s+be)\s+", re.IGNORECASE)
_HEDGE_WORD = re.compile(r"\W*(?:or|and|maybe|perhaps|possibly)\b")  # "Bladder, or maybe kidney"
# What may follow an option's text when an answer opens with it: "Autosomal recessive, because ...".
_OPTION_SEPARATOR = re.compile(r"\s*(?:[,.;:(\-–—]|\s(?:because|since|as|which)\b)")
_MAX_SPANS = 16
_MAX_MENTIONS = 64


def normalise_gold(answer, options: tuple[str, ...] = ()) -> str:
    match = _LETTER_ONLY.fullmatch(str(answer).strip())
    letter = match[1].upper() if match else None
    if letter is None or letter not in _valid_letters(options):
        raise DataError(f"choice answer {answer!r} is not one of the letters {_valid_letters(options)}")
    return letter


def parse(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """The option chosen by an answer: a letter pattern, one option's text (case and punctuation aside), or an
    answer that starts with either and goes on to explain ("B. Autosomal recessive, because ...")."""
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
    if match:
        return _checked(match[1], options)
    return _option_opening(text, options) if options else None


def scan(text: str, options: tuple[str, ...] = (), announced: bool = False, texts: bool = True
         ) -> str | object | None:
    """The one option the text asserts: letter mentions ("(B)", "option B", "B is correct"; in an announced answer
    also a bare "B"), else option texts (unless texts=False). Rejected mentions do not count; several asserted
    options are a hedge."""
    asserted, mentioned = _letter_mentions(text, options, announced)
    if not mentioned and options and texts:
        asserted, mentioned = _option_mentions(text, options)
    if len(asserted) > 1:
        return AMBIGUOUS
    return asserted[0] if asserted else REJECTED if mentioned else None


def fallback(text: str, options: tuple[str, ...] = (), texts: bool = True) -> str | object | None:
    """Free text without an answer statement: an answer opening the text ("B. Because ...", "D, X-linked"), unless
    the text lists the options; else the option its conclusion asserts ("So (B)."); else the option a superlative
    sentence names ("the best initial test would be a head MRI"). An opening and a conclusion by letter that
    differ are a hedge; a conclusion that only mentions an option's text does not overrule an opening letter."""
    opening = None
    if len(set(_OPTION_LINE.findall(text))) < 2:
        line = first_line(text)
        opening = parse(first_sentence(line), options)
        if opening is None:
            opening = parse(line, options)
    conclusion, by_letter = _conclusion(text, options, texts) if not _ends_with_option_list(text) else (None, False)
    if opening is None or opening is AMBIGUOUS:
        if conclusion is None and options and texts:
            return _superlative_choice(text, options)
        return conclusion
    return opening if conclusion in (None, opening) or not by_letter else AMBIGUOUS


def is_valid(extracted: str, options: tuple[str, ...] = ()) -> bool:
    return extracted in _valid_letters(options)


def _ends_with_option_list(text: str) -> bool:
    """Whether the text ends by listing options line by line ("A) ...\nB) ...\nC) ..."): no choice made."""
    lines = text.rstrip().rsplit("\n", 3)[-3:]
    return len(lines) >= 2 and all(_OPTION_LINE.match(line) for line in lines[-2:])


def _conclusion(text: str, options: tuple[str, ...], texts: bool) -> tuple[object, bool]:
    """What the last sentence asserts, reading back over closing sentences that only reject options; and
    whether it said so by letter (not only by an option's text)."""
    for sentence in final_sentences(text):
        asserted, mentioned = _letter_mentions(sentence, options, False)
        by_letter = mentioned
        if not mentioned and options and texts:
            asserted, mentioned = _option_mentions(sentence, options)
        if asserted:
            return (asserted[0] if len(asserted) == 1 else AMBIGUOUS), by_letter
        if not mentioned and not _rejects_a_bare_letter(sentence, options):
            return None, False
    return None, False


def _rejects_a_bare_letter(sentence: str, options: tuple[str, ...]) -> bool:
    """A closing sentence that only rules out a bare letter ("A can be ruled out.", "D is incorrect."): read on
    back, as after "Option A is incorrect." (a bare letter is no mention on its own: "A patient" is an article)."""
    valid = _valid_letters(options)
    return any(match[1] in valid and rejected(sentence, match.start(1), match.end(1))
               for match in _BARE_CAPITAL.finditer(sentence))


def _superlative_choice(text: str, options: tuple[str, ...]) -> str | object | None:
    """The option named right after the last "the best / most likely ... is / would be" in the text."""
    found = None
    for match in _SUPERLATIVE.finditer(text):
        found = match
    if found is None:
        return None
    asserted, _ = _option_mentions(first_sentence(text[found.end():found.end() + 300]), options)
    return asserted[0] if len(asserted) == 1 else None


def _letter_mentions(text: str, options: tuple[str, ...], announced: bool) -> tuple[list[str], bool]:
    """The letters the text asserts (first-seen order, at most two: more is a hedge anyway) and whether it
    mentions any valid letter, asserted or rejected."""
    valid = _valid_letters(options)
    asserted, mentioned = [], False
    for pattern in (_MENTION, _BARE) if announced else (_MENTION,):
        for count, match in enumerate(pattern.finditer(text)):
            if count == _MAX_MENTIONS or len(asserted) > 1:
                break  # a wall of letters is no answer, and costs no more than this
            group = next(index for index in range(1, len(match.groups()) + 1) if match[index])
            letter = match[group]
            if letter not in valid or letter in asserted:
                continue
            mentioned = True
            if not rejected(text, match.start(group), match.end(group), later=True):
                asserted.append(letter)
    return asserted, mentioned


def _offers_another_letter(text: str, letter: str) -> bool:
    if _HEDGE_START.match(text):
        return True
    others = [match[group] for match in _MENTION.finditer(text)
              for group in range(1, len(match.groups()) + 1) if match[group]
              if not rejected(text, match.start(group), match.end(group), later=True)]
    others += [match[1] for match in _HEDGED_LETTER.finditer(text) if not rejected(text, match.start(1), match.end(1))]
    return any(other != letter for other in others)


def _valid_letters(options: tuple[str, ...]) -> str:
    return LETTERS[:len(options)] if options else LETTERS


def _checked(letter: str, options: tuple[str, ...]) -> str | None:
    return letter if letter in _valid_letters(options) else None


_PUNCTUATION = re.compile(r"[-‐–—/_*`'\"“”‘’]+")


def _norm(text: str) -> str:
    """Lower case, hyphens and quotes as spaces, single spaces: "X-linked  Dominant." -> "x linked dominant"."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split()).strip(" .,;:!?")


@lru_cache(maxsize=4096)
def _normalised_options(options: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_norm(option) for option in options)


def _option_named(text: str, options: tuple[str, ...]) -> str | object | None:
    key = _norm(text)
    hits = [letter for letter, option in zip(LETTERS, _normalised_options(options)) if option and option == key]
    if len(hits) > 1:
        return AMBIGUOUS
    return hits[0] if hits else None


def _option_opening(text: str, options: tuple[str, ...]) -> str | None:
    """The option whose full text opens the answer, followed by an explanation ("Autosomal recessive, because");
    the longest such option, so "Paralysis and loss of taste" wins over "Paralysis"."""
    key = _norm(text)
    best = None
    for letter, option in zip(LETTERS, _normalised_options(options)):
        if option and key.startswith(option) and _OPTION_SEPARATOR.match(key, len(option)):
            if best is None or len(option) > len(best[1]):
                best = (letter, option)
    if best is None or _HEDGE_WORD.match(key, len(best[1])):
        return None  # "Bladder, or maybe kidney"
    return best[0]


def _option_mentions(text: str, options: tuple[str, ...]) -> tuple[list[str], bool]:
    """The options whose text the text asserts (as whole words, in order of appearance) and whether it mentions
    any; an option only contained in a longer mentioned option ("paralysis" inside "paralysis and loss of
    taste") does not count."""
    haystack = _norm(text)
    spans = {letter: _whole_word_spans(haystack, option)
             for letter, option in zip(LETTERS, _normalised_options(options)) if option}
    found = []
    for letter, own in spans.items():
        for span in own:
            if not _inside_another_option(span, letter, spans):
                found.append((span[0], letter, not rejected(haystack, *span, later=True)))
    asserted = list(dict.fromkeys(letter for _, letter, is_asserted in sorted(found) if is_asserted))
    return asserted, bool(found)


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
