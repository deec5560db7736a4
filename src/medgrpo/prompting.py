"""The response format a run asks for: system prompt and the tags that delimit thinking and the answer.

The answer tag is the same in every format because graders, rewards and the predictions contract read
`<answer>...</answer>`; only the thinking tag changes (`<reasoning>` for the recipe, `<think>` for Qwen3 style).
"""
from __future__ import annotations

from dataclasses import dataclass

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"


@dataclass(frozen=True)
class PromptFormat:
    system: str
    think_tag: str = "reasoning"

    @property
    def think_open(self) -> str:
        return f"<{self.think_tag}>"

    @property
    def think_close(self) -> str:
        return f"</{self.think_tag}>"

    @classmethod
    def from_config(cls, cfg) -> "PromptFormat":
        return cls(system=str(cfg.system), think_tag=str(cfg.think_tag))
