"""Locating the final answer inside a completion: answer blocks, the part after the reasoning, answer statements.

These helpers know nothing about answer types; the readers in `numeric`, `yesno` and `choice` interpret the
pieces they return. Every function here is linear in the completion's length (str.find / simple regexes with no
nested quantifiers), so a megabyte of garbage costs milliseconds, never a hang.
"""
from __future__ import annotations

import re

from medgrpo.prompting import ANSWER_CLOSE, ANSWER_OPEN

# Reasoning delimiters of both prompt formats: a grader does not know which one a run asked for, and a model
# asked for <reasoning> that writes <think> still separated its working from its answer.
THINK_OPENS = ("<reasoning>", "<think>")
THINK_CLOSES = ("</reasoning>", "</think>")


class _Ambiguous:
    """Returned by readers when the text offers more than one answer (hedging): graded as no answer."""

    def __repr__(self) -> str:
        return "AMBIGUOUS"


AMBIGUOUS = _Ambiguous()

# Phrases with which people and models announce the final answer, each found from a keyword (searched from the
# end with str.rfind: the LAST statement counts, and finding it costs what the text after it costs). A model may
# correct itself: "... the answer is 16. Wait, I forgot the tip: the answer is 18." is 18.
_STATEMENT_AT_KEYWORD = {
    "answer": re.compile(r"answer[*_]*(?:\s+(?:is|was|would\s+be|should\s+be|will\s+be)\b|\s*[:=])"),
    "option": re.compile(r"option\s+is\b"),   # "the correct option is B"
    "choice": re.compile(r"choice\s+is\b"),
    "####": re.compile("####"),                  # GSM8K's own final line
    "\\boxed{": re.compile(r"\\boxed\{"),
}
_QUALIFIED = re.compile(r"(?:correct|right|best)\s+$")  # what must precede "option is" / "choice is"
# Leading filler that adds nothing to an answer: "Answer: B", "The final answer is 18", "option B", "Choice (C)".
_PREFIX = re.compile(
    r"(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?(?:answer|option|choice)\b[*_]*"
    r"\s*(?:is\b|would\s+be\b|[:=\-])?\s*",
    re.IGNORECASE,
)
_LATEX_WRAPPER = re.compile(r"\\(?:boxed|text|textbf|mathrm|mbox)\{([^{}]*)\}")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_STATEMENT_MAX_CHARS = 300


def answer_segments(text: str) -> list[tuple[str, bool]]:
    """(content, closed) for every `<answer>` in the text, in order.

    A block ends at `</answer>` (closed) or, if another `<answer>` or the end of the text comes first, is unclosed.
    """
    segments = []
    for segment in text.split(ANSWER_OPEN)[1:]:
        end = segment.find(ANSWER_CLOSE)
        segments.append((segment, False) if end < 0 else (segment[:end], True))
    return segments


def text_after_reasoning(text: str) -> str | None:
    """The part of a completion where a final answer belongs: everything after the last reasoning close tag.

    Text inside the reasoning is working, not an answer. A completion that opened a reasoning block and never
    closed it (typically cut off by the token limit) has given no answer: None. Without reasoning tags the whole
    text is the answer region.
    """
    close_at, close_tag = max((text.rfind(tag), tag) for tag in THINK_CLOSES)
    if close_at >= 0:
        return text[close_at + len(close_tag):]
    if any(tag in text for tag in THINK_OPENS):
        return None
    return text


def last_statement(text: str) -> str | None:
    """What follows the last answer announcement ("the answer is", "Answer:", "####", "\\boxed{"), or None.

    For `\\boxed{` the braced content; otherwise the rest of that line (or the next non-empty line when the
    announcement ends its line, as in "Final answer:\\n**B**").
    """
    lower = text.lower()
    if len(lower) != len(text):  # a few characters lower-case to two ("İ"): keep positions aligned
        lower = "".join(char if len(char.lower()) != 1 else char.lower() for char in text)
    last_start, last_end = -1, -1
    for keyword, pattern in _STATEMENT_AT_KEYWORD.items():
        search_end = len(lower)
        while (at := lower.rfind(keyword, last_start + 1, search_end)) >= 0:
            match = pattern.match(lower, at)
            if match and _announces(lower, keyword, at):
                last_start, last_end = at, match.end()
                break
            search_end = at + len(keyword) - 1
    if last_start < 0:
        return None
    if lower.startswith("\\boxed{", last_start):
        return _braced(text, last_end)
    start = last_end
    while start < len(text) and text[start] in " \t\r\n*_:":
        start += 1
    end = text.find("\n", start, start + _STATEMENT_MAX_CHARS)
    return text[start:end if end >= 0 else start + _STATEMENT_MAX_CHARS]


def _announces(lower: str, keyword: str, at: int) -> bool:
    if keyword in ("option", "choice"):
        return bool(_QUALIFIED.search(lower, max(0, at - 12), at))
    return keyword != "answer" or at == 0 or not lower[at - 1].isalnum()


def _braced(text: str, start: int) -> str:
    depth = 1
    for index in range(start, min(len(text), start + _STATEMENT_MAX_CHARS)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return text[start:start + _STATEMENT_MAX_CHARS]


def first_sentence(text: str) -> str:
    """Up to the first sentence end ("18. Then..." -> "18"); a decimal point is not a sentence end."""
    match = _SENTENCE_END.search(text)
    return text[:match.start()] if match else text


def final_sentence(text: str) -> str:
    """The last non-empty sentence of the last non-empty line: where a conclusion stands."""
    stripped = text.rstrip()
    line = stripped[stripped.rfind("\n") + 1:]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s.strip(" .!?*_")]
    return sentences[-1] if sentences else ""


def clean(text: str) -> str:
    """An answer as written minus decoration: markdown, LaTeX wrappers, quotes, "Answer:" style prefixes."""
    text = text.strip()
    if "\\" in text or "$" in text:
        text = _LATEX_WRAPPER.sub(r"\1", _LATEX_WRAPPER.sub(r"\1", text))
        text = text.replace("\\(", "").replace("\\)", "").replace("\\$", "$").replace("{,}", ",")
        if text.count("$") >= 2 and text.startswith("$"):
            text = text.strip("$")  # math mode "$18$"; a single "$" is a currency sign and stays
    text = text.replace("**", "").replace("__", "").strip(" \t\r\n*_`'\"")
    for _ in range(2):  # "The answer is option B"
        match = _PREFIX.match(text)
        if not match or match.end() == 0:
            break
        text = text[match.end():]
    return text.strip(" \t\r\n*_`'\"").rstrip(".!;,")
