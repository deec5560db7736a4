"""Answer extraction per answer type, used through `medgrpo.grade` (grade, extract, Graded).

Each answer-type module (numeric, yesno, choice) is a reader with the same functions:
  normalise_gold(answer, options) -> canonical gold string (DataError if invalid)
  parse(text, options)    -> the answer a text gives when it is meant to be the answer (a block, a statement)
  scan(text, options)     -> the one answer a text mentions
  fallback(text, options) -> the final answer of free text without an answer statement
  is_valid(extracted, options) -> whether an extracted answer is a possible label for the item
parse/scan/fallback return a canonical string, None (no answer found) or text.AMBIGUOUS (several answers offered).
"""
from medgrpo.grading import choice, numeric, yesno

READERS = {"numeric": numeric, "yesno": yesno, "choice": choice}
ANSWER_TYPES = tuple(READERS)
