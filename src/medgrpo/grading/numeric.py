"""Numeric answers (GSM8K): read a number whatever its notation, compare exact values.

Accepted notations: thousands separators (1,234), currency and units ($18, 18 dollars, 25%), trailing zeros
(18.00 = 18), negatives (-3, −3), simple fractions (3/4, \\frac{3}{4}), \\boxed{}, scientific notation and
powers (1e3, 1.5×10^3, 1.5 \\times 10^{3}, 10³, 2^10) read as their value, never as their mantissa. Values are
kept as exact fractions and written back canonically ("18", "-3.5", "1/3"), so equal values give equal strings.
A negated or rejected number ("not 18", "18 is wrong") is not an answer.
"""
from __future__ import annotations

import re
from fractions import Fraction
from itertools import islice, pairwise

from medgrpo.errors import DataError
from medgrpo.grading.text import AMBIGUOUS, REJECTED, clean, rejected

# A number not glued to a word or a decimal point on its left ("x2", "COVID19" and the "3" of "16-3" are not
# negative or standalone numbers). Thousands groups need exactly three digits, so "1,23" is two numbers.
_NUMBER = re.compile(  # the leading lookahead lets the regex engine skip quickly to the next possible number
    r"(?=[-−$\d])(?<![\w.])(?P<sign>[-−])?\$?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<dec>\.\d+)?"
    r"(?:[eE](?P<exp>[-+−]?\d{1,3})(?!\w)"
    r"|\s*(?:[x×*·]|\\times|\\cdot)\s*10\s*\^\s*\{?\s*(?P<exp10>[-+−]?\d{1,3})\s*\}?"
    r"|\s*\^\s*\{?(?P<power>\d{1,2})\}?(?![\d.]))?"
    r"(?:\s*/\s*(?P<den>\d+)(?![\d/.]))?"
)
# What joins two numbers offered as alternatives: "18 or 19", "17-19", "18, 19", "18 (or maybe 19)", "18. Or 19".
_ALTERNATIVE = re.compile(r"\s*[.,;:]?\s*\(?\s*(?:or|and|to|,|/|;|-|–|~)(?:\s+(?:maybe|perhaps|possibly))?\s*"
                          # two quantities where one number is asked: "72 glasses and 36 plates", "3 hours and 20"
                          r"|(?:\s+[^\W\d_]+){1,2},?\s+and\s+", re.IGNORECASE)
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\{\s*([-−]?\d+)\s*\}\{\s*(\d+)\s*\}")
_MAX_DIGITS = 40  # longer digit runs are not answers (and int() refuses > 4300 digits)
_MAX_EXPONENT = 100  # 1e100000 is not an answer, and its exact value would cost memory
_MAX_NUMBERS = 64  # an answer with more numbers than this is not read as an answer
_SCAN_WINDOW = 256
_NUMBER_CHARS = frozenset("0123456789,.$-−/ ")
_LETTER = re.compile(r"[^\W\d_]")
_UNIT = re.compile(r"\s*(?:%|(?!(?:is|are|was|were|would|can|could|should|must|may|might|seems?|appears?|not)\b)"
                   r"[^\W\d_]+)")
_SENTENCE_BREAK = re.compile(r"[.!?;]\s|\n")


def normalise_gold(answer, options: tuple[str, ...] = ()) -> str:
    """The canonical string of a gold answer ("72", "2,125", "-3.5", 18); DataError if it is not a number."""
    value = parse(str(answer))
    if value is None or value is AMBIGUOUS:
        raise DataError(f"numeric answer {answer!r} is not a single number")
    return value


def parse(text: str, options: tuple[str, ...] = ()) -> str | object | None:
    """A number written as the answer: "$1,234.50", "18 eggs", "9 * 2 = 18" (the result after the last "=").

    With several different numbers, the answer is the one the text opens with ("$18 (9 eggs x $2)"); a text
    that opens with words ("Janet has 16 eggs ... so $18") is left to `scan` (the last number).
    """
    text = _prepare(clean(text))
    if "=" in text:
        text = text[text.rfind("=") + 1:]
    numbers = _numbers(text, limit=_MAX_NUMBERS + 1)
    if len(numbers) > _MAX_NUMBERS:
        return None  # a wall of numbers is not an answer (scan reads its end)
    numbers = [(match, value) for match, value in numbers if not _rejected(text, match)]
    if not numbers:
        return None
    if len({value for _, value in numbers}) == 1:
        return canonical(numbers[0][1])
    if _offers_alternatives(text, numbers):
        return AMBIGUOUS
    first, value = numbers[0]
    if not _LETTER.search(text, 0, first.start()):
        return canonical(value)
    return None


def scan(text: str, options: tuple[str, ...] = (), announced: bool = False) -> str | object | None:
    """The last number in the text, as a careful grader reads a worked solution; alternatives are ambiguous.
    A rejected last number gives way to the one before it in the same sentence ("18, not 19"), else to none.
    An announced answer may spell its number ("the answer is two hundred fifty-five"); an answer block must
    hold the number itself."""
    if announced and not _DIGIT.search(text):
        value = _spelled_number(text)
        return None if value is None else str(value)
    text = _prepare(text)
    window = _SCAN_WINDOW
    while True:  # read from the end: the last numbers are usually in the final line
        start = max(0, len(text) - window)
        floor = max(0, start - _MAX_DIGITS - 24)
        while start > floor and text[start - 1] in _NUMBER_CHARS:  # do not cut a number in two
            start -= 1
        matches = list(_NUMBER.finditer(text, start))
        if len(matches) >= 2 or start == 0:
            break
        window *= 8
    last_two = []
    for match in reversed(matches):  # values only for the numbers needed: Fraction() is the costly part
        value = _value(match)
        if value is not None:
            last_two.insert(0, (match, value))
            if len(last_two) == 2:
                break
    if not last_two:
        return None
    last, value = last_two[-1]
    if _rejected(text, last):
        if len(last_two) < 2:
            return REJECTED
        previous, previous_value = last_two[0]
        same_sentence = not _SENTENCE_BREAK.search(text, previous.end(), last.start())
        if not same_sentence or _rejected(text, previous):
            return REJECTED
        return canonical(previous_value)
    if len(last_two) == 2:
        previous, previous_value = last_two[0]
        if previous_value != value and _ALTERNATIVE.fullmatch(text, previous.end(), last.start()):
            return AMBIGUOUS
    return canonical(value)


fallback = scan


def is_valid(extracted: str, options: tuple[str, ...] = ()) -> bool:
    return True


def canonical(value: Fraction) -> str:
    """Exact and unique: integers as "18", terminating decimals as "-3.5", other fractions as "1/3"."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    places = 0
    while (value * 10 ** places).denominator != 1:
        places += 1
    digits = str(abs((value * 10 ** places).numerator)).rjust(places + 1, "0")
    return ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:]


_UNITS = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {word: 10 * value for value, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(),
                                                       start=2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_WORD = re.compile(r"[a-z]+")
_DIGIT = re.compile(r"\d")


def _spelled_number(text: str) -> int | None:
    """The first number spelled in words ("two hundred fifty-five" -> 255, "a dozen" is not one); None if none."""
    total, current, seen = 0, 0, False
    for word in _WORD.findall(text.lower()):
        if word in _UNITS or word in _TENS:
            current += _UNITS.get(word, 0) + _TENS.get(word, 0)
        elif word == "hundred" and seen:
            current *= 100
        elif word in _SCALES and seen:
            total, current = total + current * _SCALES[word], 0
        elif word == "and" and seen:
            continue
        elif seen:
            break
        else:
            continue
        seen = True
    return total + current if seen else None


def _prepare(text: str) -> str:
    if "\\" in text:
        text = _LATEX_FRACTION.sub(r"\1/\2", text).replace("\\,", "").replace("\\!", "")
    return text


def _numbers(text: str, start: int = 0, limit: int | None = None) -> list[tuple[re.Match, Fraction]]:
    matches = islice(_NUMBER.finditer(text, start), limit)
    return [(match, value) for match in matches if (value := _value(match)) is not None]


def _value(match: re.Match) -> Fraction | None:
    digits = match["int"].replace(",", "") + (match["dec"] or "")
    if len(digits) > _MAX_DIGITS:
        return None
    value = Fraction(digits)
    if match["den"] is not None:
        if len(match["den"]) > _MAX_DIGITS or int(match["den"]) == 0:
            return None
        value /= int(match["den"])
    exponent = match["exp"] or match["exp10"]
    if exponent is not None:
        exponent = int(exponent.replace("−", "-"))
        if abs(exponent) > _MAX_EXPONENT:
            return None
        value *= Fraction(10) ** exponent
    elif match["power"] is not None:
        if len(digits) * int(match["power"]) > _MAX_EXPONENT:
            return None
        value **= int(match["power"])
    return -value if match["sign"] else value


def _rejected(text: str, match: re.Match) -> bool:
    """A negated or rejected number, also with its unit between: "260 dollars is incorrect"."""
    unit = _UNIT.match(text, match.end())
    return rejected(text, match.start(), match.end()) or bool(unit and rejected(text, unit.end(), unit.end()))


def _offers_alternatives(text: str, numbers: list[tuple[re.Match, Fraction]]) -> bool:
    return any(_ALTERNATIVE.fullmatch(text, left.end(), right.start()) and left_value != right_value
               for (left, left_value), (right, right_value) in pairwise(numbers))
