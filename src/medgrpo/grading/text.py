"""Locating the final answer inside a completion: reasoning, answer blocks, follow-up material, answer statements,
and whether a mention of an answer is asserted or rejected.

These helpers know nothing about answer types; the readers in `numeric`, `yesno`, `choice` and `open_text`
interpret the pieces they return. Every function here is linear in the completion's length (str.find / simple
regexes with no nested quantifiers), so a megabyte of garbage costs milliseconds, never a hang.
"""
from __future__ import annotations

import json
import re
import unicodedata

from medgrpo.prompting import ANSWER_CLOSE, ANSWER_OPEN


class _Ambiguous:
    """Returned by readers when the text offers more than one answer (hedging): graded as no answer."""

    def __repr__(self) -> str:
        return "AMBIGUOUS"


AMBIGUOUS = _Ambiguous()


class _Rejected:
    """Returned by scan when the text mentions answers only to reject them ("the answer is not A"): an announced
    answer that rejects is no answer, and the grader does not fall back to other text."""

    def __repr__(self) -> str:
        return "REJECTED"


REJECTED = _Rejected()

_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUPERSCRIPT_RUN = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+")


def normalise(text: str) -> str:
    """Full-width and other compatibility characters as plain ones (NFKC: "Ｂ" -> "B", "：" -> ":"); superscript
    exponents as "^3" first, because NFKC would glue them to the base ("10³" -> "103")."""
    if text.isascii():
        return text
    text = _SUPERSCRIPT_RUN.sub(lambda run: "^" + run[0].translate(_SUPERSCRIPTS), text)
    return unicodedata.normalize("NFKC", text).replace("⁄", "/")


# A completion stored with its line breaks escaped (a dump that wrote repr() or encoded the JSON twice) has no real
# line break and holds `\n` as two characters: "B\n\n" for B and two line breaks. It is read as the text it stands
# for, and so graded exactly as the same completion with real line breaks: "B\n\n" is B, and a list of answers
# ("A\nB\nC", "no\nyes") is still a hedge; nothing is read that the unescaped text would not give. Not a line
# break: a `\n` after a backslash (an escaped backslash, "\\n") or starting a LaTeX command ("\neq", "\nu_L",
# "H\nearrow"). 470 of MMLU-Pro's published one-line completions hold such commands: all read the same with this
# rule (decoding those commands too changed one). `\t` and a lone `\r` stay text (`\times`, `\theta`, `\rho`).
_ESCAPED_LINE_BREAK = re.compile(r"(?<!\\)(?:\\r)?\\n(?!(?:e|eq|eg|ne|i|ni|u|abla|ot|otin|mid|leq|geq|less|gtr|"
                                 r"earrow|warrow|ewline|atural|exists|subseteq|parallel|cong|sim|onumber)"
                                 r"(?![A-Za-z]))")


def unescape_line_breaks(text: str) -> str:
    """The text with its escaped line breaks as real ones, when it has no real one (see above); else as it is."""
    if "\n" in text or "\\n" not in text:
        return text
    return _ESCAPED_LINE_BREAK.sub("\n", text)


# ------------------------------------------------------------------------------------------- reasoning / blocks

# Reasoning delimiters of both prompt formats: a grader does not know which one a run asked for, and a model
# asked for <reasoning> that writes <think> still separated its working from its answer. Small models also
# close with "<end think>" or "<\think>".
_THINK_TAG = re.compile(r"<(/|\\|end[ _]?)?\s*(?:reasoning|think|thinking)\s*>", re.IGNORECASE)
_UNFINISHED_TAG = re.compile(r"<[^<>]*$")
_ANY_TAG = re.compile(r"</?[A-Za-z][\w ]{0,20}>")


def reasoning_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of every reasoning block: from an opening tag (or the start of the text, for chat templates
    that put <think> in the prompt, when the first tag is a close tag) to its closing tag; an unclosed block runs
    to the end of the text."""
    spans, start = [], None
    for tag in _THINK_TAG.finditer(text):
        if not tag[1]:
            start = tag.start() if start is None else start
        elif start is not None or not spans:  # a later close without an opening tag is a stray: no reasoning
            spans.append((start or 0, tag.end()))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


def text_after_reasoning(text: str, spans: list[tuple[int, int]]) -> str | None:
    """Where a final answer belongs: after the last reasoning block. None when the reasoning never closed (a
    truncated completion has given no answer); the whole text when there is no reasoning."""
    if not spans:
        return text
    start, end = spans[-1]
    last_tag = text.rfind("<", start, end)
    closed = last_tag >= 0 and (tag := _THINK_TAG.fullmatch(text, last_tag, end)) is not None and tag[1]
    return text[end:] if closed else None


def answer_segments(text: str, spans: list[tuple[int, int]]) -> list[tuple[str | None, bool]]:
    """(content, closed) for every `<answer>` outside the reasoning, in order. A block inside the reasoning is a
    draft, not an answer. A block ends at `</answer>` (closed) or, if another `<answer>` or the end of the text
    comes first, is unclosed: then it ends at another tag ("<answer> 19 </think>"), and a block cut off inside a
    tag ("18</ans") has content None. An empty unclosed block at the very end (the model opened the tag and
    stopped) is no block."""
    segments, position = [], 0
    while (at := text.find(ANSWER_OPEN, position)) >= 0:
        position = at + len(ANSWER_OPEN)
        if any(start <= at < end for start, end in spans):
            continue
        next_open = text.find(ANSWER_OPEN, position)
        end = text.find(ANSWER_CLOSE, position, next_open if next_open >= 0 else len(text))
        if end >= 0:
            segments.append((text[position:end], True))
            continue
        content = text[position:next_open if next_open >= 0 else len(text)]
        if next_open < 0 and not content.strip():
            continue
        if next_open < 0 and _UNFINISHED_TAG.search(content):
            content = None
        elif other_tag := _ANY_TAG.search(content):
            content = content[:other_tag.start()]
        segments.append((content, False))
    return segments


# ------------------------------------------------------------------------------------------- follow-up material

# A new turn or exercise that a model invents after answering, on a new line: "Question 2:", "### Human:", "Q:"
# (the leading "\n" lets the regex engine jump from line to line), or a chat-template token anywhere.
_FOLLOW_UP_LINE = re.compile(
    r"\n[ \t>#*_]*(?:(?:next|new|another|follow[- ]?up|bonus|similar)\s+)?"
    r"(?:question|q|problem|human|user|instruction|input|exercise|query|context|passage|abstract)"
    r"(?:[ \t]*\d+)?[ \t]*[*_]*[ \t]*(?:[:.)\]]|(?=\r?\n|$))",
    re.IGNORECASE,
)
_TURN_TOKEN = re.compile(r"<\|(?:im_start|im_end|user|eot_id|endoftext|end|start_header_id)\|>|</s>")
_NON_SPACE = re.compile(r"\S")
_LINE_END = re.compile(r"[ \t\r]*(?:\n|$)")
_MAX_FOLLOW_UPS = 8
_MIN_RESTART_CHARS = 12


def follow_up_starts(text: str, start: int = 0) -> list[int]:
    """Where made-up material may begin after `start` (the end of the first reasoning block): a new turn or
    exercise ("Question 2:", "### Human:", "<|im_start|>") at a line start, or the text's first line written again
    as a whole line (the model starts over: "Let's think step by step." a second time). The grader cuts at the
    first of these that comes after an answer, so that an echo of the prompt before the answer stays."""
    positions = [match.start() + 1 for _, match in zip(range(_MAX_FOLLOW_UPS), _FOLLOW_UP_LINE.finditer(text, start))]
    if "<|" in text or "</s>" in text:
        positions += [match.start() for _, match in zip(range(_MAX_FOLLOW_UPS), _TURN_TOKEN.finditer(text, start))]
    first = _NON_SPACE.search(text, start)
    if first is not None:
        line_end = text.find("\n", first.start())
        opening = text[first.start():len(text) if line_end < 0 else line_end].rstrip()
        again = text.find("\n" + opening, first.start() + len(opening)) if len(opening) >= _MIN_RESTART_CHARS else -1
        for _ in range(_MAX_FOLLOW_UPS):
            if again < 0:
                break
            if _LINE_END.match(text, again + 1 + len(opening)):  # the whole first line again, on its own line
                positions.append(again + 1)
                break
            again = text.find("\n" + opening, again + 1)
    return sorted(positions)


# ------------------------------------------------------------------------------------------- answer statements

# Phrases with which people and models announce the final answer, each found from a keyword (searched from the
# end with str.rfind: the LAST statement counts, and finding it costs what the text after it costs). A model may
# correct itself: "... the answer is 16. Wait, I forgot the tip: the answer is 18." is 18.
_STATEMENT_AT_KEYWORD = {
    # "the answer is", "the answer (arabic numerals) is", "Answer: B", "Answer - B", JSON "answer": "B", and a
    # heading alone on its line ("## Final Answer\nB")
    "answer": re.compile(r"answer(?:[*_]*(?:\s*\([^()\n]{0,40}\))?(?:\s+(?:is|was|would\s+be|should\s+be|will\s+be)\b"
                         r"|\s*[:=]|\s+[-–—](?=\s))|[\"']\s*:|[ \t*_#]*\r?\n)"),
    "decision": re.compile(r"decision(?:[*_]*(?:\s+is\b|\s*[:=])|[\"']\s*:)"),  # PubMedQA's "Final decision: yes"
    "response": re.compile(r"response\s+is\b"),  # "the correct response is B"
    "option": re.compile(r"option(?:\s+is\b|[\"']\s*:)"),   # "the correct option is B", JSON "option": "B"
    "choice": re.compile(r"choice(?:\s+is\b|[\"']\s*:)"),
    "####": re.compile(r"####[ \t]*(?=[^\s#])"),  # GSM8K's own final line (a bare "####" line is a separator)
    "\\boxed{": re.compile(r"\\boxed\{"),
}
_QUALIFIED = re.compile(r"(?:correct|right|best)\s+$")  # what must precede "option is", "choice is", "response is"
_HEADING_PREFIX = re.compile(r"[ \t>#*_]*(?:(?:the|my)\s+)?(?:final|correct|best)?[ \t*_]*$")
_JSON_STRING = re.compile(r'"((?:[^"\\\n]|\\.){0,300})"')
_EXAMPLE_INTRO = re.compile(r"\bexample\b[^\n]*\n?\s*(?:```[a-z]*\s*)?$", re.IGNORECASE)
# Every JSON "answer" value ({"answer": "C"}, "final_answer": 18): like answer blocks, they must agree.
_JSON_KEY_HINTS = ("nswer", "NSWER", "ecision", "ECISION")
_JSON_ANSWER = re.compile(r'["\'](?:(?:final_|correct_)?answer|(?:final_)?decision)["\']\s*:\s*'
                          r'(?:"((?:[^"\\\n]|\\.){0,300})"'
                          r"|'([^'\n]{0,300})'|(-?[\d.,]+(?:[eE][-+]?\d+)?))", re.IGNORECASE)
# Leading filler that adds nothing to an answer: "Answer: B", "The final answer is 18", "option B", "Choice (C)".
_PREFIX = re.compile(
    r"(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?(?:answer|option|choice|decision|response)\b[*_]*"
    r"\s*(?:is\b|would\s+be\b|[:=\-])?\s*",
    re.IGNORECASE,
)
_LATEX_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|mathrm|mbox|mathbf)\{([^{}]*)\}")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])(?<!\b[A-J]\.)\s+")  # "It is not C. Spleen." is one sentence
_STATEMENT_MAX_CHARS = 300
_MAX_CONCLUSION_LINES = 8
_MAX_STATEMENTS = 4


def last_statement(text: str) -> str | None:
    """What follows the last answer announcement ("the answer is", "Answer:", "## Final Answer", a JSON "answer"
    key, "####", "\\boxed{"), or None.

    For `\\boxed{` the braced content; for a JSON key its string value; otherwise the rest of that line, or, when
    the announcement ends its line ("Final answer:\\n**B**"), the lines below it up to a blank line (a short
    derivation "y = 180 - 150\\ny = 30" ends with its result).
    """
    found = statements(text, 1)
    return found[0] if found else None


def statements(text: str, limit: int = _MAX_STATEMENTS) -> list[str]:
    """What follows each of the last `limit` answer announcements (see last_statement), last first."""
    lower = text.lower()
    if len(lower) != len(text):  # a few characters lower-case to two ("İ"): keep positions aligned
        lower = "".join(char if len(char.lower()) != 1 else char.lower() for char in text)
    found, end = [], len(lower)
    while len(found) < limit and (announcement := _last_announcement(lower, end)) is not None:
        found.append(_statement(text, lower, *announcement))
        end = announcement[0]
    return found


def _last_announcement(lower: str, end: int) -> tuple[int, int] | None:
    """(start, end) of the last announcement that starts before `end`."""
    last_start, last_end = -1, -1
    for keyword, pattern in _STATEMENT_AT_KEYWORD.items():
        search_end = end + len(keyword) - 1
        while (at := lower.rfind(keyword, last_start + 1, search_end)) >= 0:
            match = pattern.match(lower, at)
            if match and _announces(lower, keyword, at, match):
                last_start, last_end = at, match.end()
                break
            search_end = at + len(keyword) - 1
            if keyword == "####":  # no earlier "####" of the same run of #s can match: skip the run at once
                search_end = len(lower[:at].rstrip("#"))
    return None if last_start < 0 else (last_start, last_end)


def _statement(text: str, lower: str, announced_at: int, announcement_end: int) -> str:
    if lower.startswith("\\boxed{", announced_at):
        return _braced(text, announcement_end)
    start = announcement_end
    while start < len(text) and text[start] in " \t\r\n*_:":
        start += 1
    if text[announcement_end - 1] == ":" and (value := _JSON_STRING.match(text, start)):
        try:
            return json.loads(value[0])
        except ValueError:
            return value[1]
    on_its_line = "\n" not in text[announcement_end:start]
    end = text.find("\n" if on_its_line else "\n\n", start, start + _STATEMENT_MAX_CHARS)
    return text[start:end if end >= 0 else start + _STATEMENT_MAX_CHARS].rstrip()


def json_answers(text: str) -> list[str]:
    """The values of all JSON "answer" keys in the text, in order (strings decoded); an object introduced as an
    example ("For example:" then a ```json fence) is not an answer."""
    values = []
    if not any(key in text for key in _JSON_KEY_HINTS):  # the regex has no literal prefix: skip texts without keys
        return values
    for match in _JSON_ANSWER.finditer(text):
        brace = text.rfind("{", max(0, match.start() - 40), match.start())
        if _EXAMPLE_INTRO.search(text, max(0, brace - 80), max(brace, 0)):
            continue
        if match[1] is not None:
            try:
                values.append(json.loads(f'"{match[1]}"'))
            except ValueError:
                values.append(match[1])
        else:
            values.append(match[2] if match[2] is not None else match[3])
    return values


def _announces(lower: str, keyword: str, at: int, match: re.Match) -> bool:
    if at > 0 and lower[at - 1].isalnum():
        return False  # "reanswer", "adoption is"
    if match[0].endswith("\n"):  # a heading: nothing but decoration and "final" before it on its line
        return bool(_HEADING_PREFIX.fullmatch(lower, lower.rfind("\n", 0, at) + 1, at))
    if keyword in ("option", "choice", "response") and not match[0].endswith(":"):
        return bool(_QUALIFIED.search(lower, max(0, at - 12), at))
    return True


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


def first_line(text: str) -> str:
    """The first non-empty line: where an answer given before its explanation stands ("B. Because ...")."""
    stripped = text.lstrip()
    end = stripped.find("\n")
    return stripped if end < 0 else stripped[:end]


def final_sentences(text: str, limit: int = 3) -> list[str]:
    """The last few non-empty sentences, last first, each within its line: where a conclusion stands."""
    sentences: list[str] = []
    end = len(text.rstrip())
    for _ in range(_MAX_CONCLUSION_LINES):  # bounded: a wall of empty lines costs nothing
        if len(sentences) >= limit or end <= 0:
            break
        start = text.rfind("\n", 0, end) + 1
        line = [s for s in _SENTENCE_SPLIT.split(text[start:end].strip()) if s.strip(" .!?*_")]
        sentences += line[::-1]
        end = start - 1
    return sentences[:limit]


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


# ------------------------------------------------------------------------------------------- asserted / rejected

# A mention is rejected, not given, when its clause negates it just before ("not yes", "isn't 18", "rather than
# C", "rule out B", "neither A nor B") with only filler words between, or calls it wrong just after ("C is
# incorrect", "Options A and D are wrong", "B can be ruled out").
_FILLER = (r"(?:the|a|an|option|choice|answer|letter|be|is|it|to|that|likely|necessarily|simply|just|clearly|really|"
           r"exactly|equal|equals|quite|actually|as|with|choose|choosing|select|selecting|pick|picking|of|"
           r"going|gonna|\(?[a-j][.):]?)")  # a letter between: "not C. Spleen" rejects the option's text too
_NEGATED_BEFORE = re.compile(
    r"(?:\bnot|n['’]t|\bnever|\bneither|\bnor|\brather\s+than|\binstead\s+of|\bother\s+than|\bexcept(?:\s+for)?"
    r"|\bexclud(?:e|es|ed|ing)|\brul(?:e|es|ed|ing)\s+out|\beliminat(?:e|es|ed|ing)|\bagainst|\bno\s+longer)"
    rf"\s+(?:{_FILLER}\s+){{0,3}}[\"'(\[*_$]*$",
    re.IGNORECASE,
)
_REJECTED_AFTER = re.compile(
    r"[)\]\"'*_.:$]*(?:\s*(?:,|\band\b|\bor\b|&)\s*(?:(?i:option)\s+)?[(\[]?(?-i:[A-J])[)\]]?)*"
    r"\s*(?:\([^()\n]{0,60}\)\s*)?"
    r"(?:(?:is|are|was|were|seems?|appears?|(?:would|can|could|should|must|may|might)\s+be)\s+)?"
    r"(?:(?:also|clearly|definitely|therefore|thus|so)\s+)?"
    r"(?:not\b|n['’]t|incorrect|wrong|false|unlikely|less\s+likely|ruled\s+out|excluded|eliminated|implausible"
    r"|inappropriate|a\s+distractor|inconsistent|irrelevant)",
    re.IGNORECASE,
)
# ... or (an option) calls it wrong later in its sentence, through "but it / this": "Option C, a lumbar puncture,
# may be considered, but it is not the best initial test". Not for labels: "Yes, but this is not the best study".
_REJECTED_LATER = re.compile(
    r"[^.;!?\n]{0,200}?,\s*(?:but|however|yet|although|though)\s+(?:it|this|that)\s+"
    r"(?:is|was|would\s+be|seems|appears)\s+(?:(?:also|clearly|still|probably)\s+)?"
    r"(?:not\s+(?:the\s+)?(?:best|correct|right|answer|most\s+\w+)|incorrect|wrong|ruled\s+out|excluded"
    r"|less\s+likely(?!\s+to\b)|unlikely(?!\s+to\b))",
    re.IGNORECASE,
)
_NEGATION_WINDOW = 60
# Substrings one of which every negation before a mention contains: a cheap test before the regex.
_NEGATION_HINT = re.compile(r"not|n['’]t|never|neither|nor|than|instead|except|exclud|rul|eliminat|against|longer")


def rejected(text: str, start: int, end: int, later: bool = False) -> bool:
    """Whether the answer mentioned at text[start:end] is negated or rejected rather than given; later=True also
    reads a rejection later in its sentence (options: "Option C, ..., but it is not the best test")."""
    before = text[max(0, start - _NEGATION_WINDOW):start].lower()
    if _NEGATION_HINT.search(before) and _NEGATED_BEFORE.search(before):
        return True
    return bool(_REJECTED_AFTER.match(text, end) or (later and _REJECTED_LATER.match(text, end)))
