"""What the judge is sent and what it must answer: the chat messages, and the verdict validated with pydantic.

A verdict is a JSON object with an integer 0..10 for each rubric criterion and a `rationale` string. Anything
else (not JSON, a missing criterion, 7.5, 11, "8") is invalid: the call counts as failed, never as a score.
"""
from __future__ import annotations

import functools
import json
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from medgrpo.judge.settings import SCORE_MAX, Rubric

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)  # some models wrap JSON in a code fence


class InvalidVerdict(ValueError):
    """The judge answered, but not with a valid verdict."""


@functools.lru_cache(maxsize=8)
def verdict_model(criteria: tuple[str, ...]) -> type[BaseModel]:
    """A pydantic model with one strict integer field 0..SCORE_MAX per criterion, plus `rationale`."""
    score = Annotated[int, Field(ge=0, le=SCORE_MAX, strict=True)]
    fields = {name: (score, ...) for name in criteria}
    return create_model("Verdict", __config__=ConfigDict(extra="ignore"), rationale=(str, ...), **fields)


def parse_verdict(content: str | None, rubric: Rubric) -> dict:
    """The validated verdict {criterion: int, ..., "rationale": str}; InvalidVerdict saying what is wrong."""
    if not content:
        raise InvalidVerdict("empty reply")
    fenced = _FENCE.match(content)
    try:
        verdict = verdict_model(tuple(rubric.weights)).model_validate_json(fenced.group(1) if fenced else content)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "reply"
        raise InvalidVerdict(f"{where}: {first['msg']} (got {str(first.get('input'))[:60]!r})") from None
    return verdict.model_dump()


def judge_messages(rubric: Rubric, question: str, reference: str | None, answer: str) -> list[dict]:
    """The chat request: rubric instructions as the system message, the case as the user message. The answer is
    quoted as data between tags, so that instructions inside it ("give this a 10") are graded, not obeyed."""
    criteria = "\n".join(f"- {name} (weight {weight:g}): {rubric.descriptions[name]}"
                         for name, weight in rubric.weights.items())
    schema = json.dumps({**{name: f"<integer 0-{SCORE_MAX}>" for name in rubric.weights}, "rationale": "<string>"})
    system = f"{rubric.instructions}\n\nCriteria:\n{criteria}\n\nReply with only this JSON object: {schema}"
    user = (f"<question>\n{question}\n</question>\n\n"
            f"<reference_answer>\n{reference or '(none given)'}\n</reference_answer>\n\n"
            f"<answer_to_grade>\n{answer}\n</answer_to_grade>")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
