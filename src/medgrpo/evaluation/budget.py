"""s1-style budget forcing ("simple test-time scaling") on top of any generation engine.

    off     generate up to eval.max_new_tokens.
    cap     think for at most max_thinking_tokens; if the model has not closed its thinking by then, append the
            end-of-thinking delimiter and answer_prefix and let it answer in at most max_answer_tokens.
    extend  as cap, but when the model closes its thinking early, drop the delimiter, append wait_text and let it
            think on — at most num_ignore times, and never past max_thinking_tokens.

Thinking tokens are the completion tokens before the delimiter (forced "Wait" tokens included), counted with the
tokenizer, so `thinking_tokens <= max_thinking_tokens` holds exactly. Every phase has a token limit: a model that
never closes its thinking is cut by the cap, never looped on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from medgrpo.errors import ConfigError
from medgrpo.evaluation.engine import Engine, Sampling


@dataclass(frozen=True)
class Budget:
    mode: str = "off"                 # off | cap | extend
    max_new_tokens: int = 1024        # the only limit when mode=off
    max_thinking_tokens: int = 0
    max_answer_tokens: int = 0
    num_ignore: int = 0
    wait_text: str = "Wait"
    answer_prefix: str = ""

    @classmethod
    def from_config(cls, budget_cfg, max_new_tokens: int) -> "Budget":
        fields = {k: budget_cfg[k] for k in ("max_thinking_tokens", "max_answer_tokens", "num_ignore",
                                              "wait_text", "answer_prefix") if k in budget_cfg}
        return cls(mode=budget_cfg.mode, max_new_tokens=max_new_tokens, **fields)

    def max_completion_tokens(self, tokenizer, think_close: str) -> int:
        """The longest completion this budget lets through: thinking up to the cap (its "Wait"s and the model's own
        delimiter included), the delimiter and answer_prefix the cap appends, and the answer."""
        if self.mode == "off":
            return self.max_new_tokens
        appended = len(tokenizer.encode(think_close + self.answer_prefix, add_special_tokens=False))
        return self.max_thinking_tokens + appended + self.max_answer_tokens

    def check_fits(self, tokenizer, think_close: str, eval_sets: dict, max_seq_length: int) -> None:
        """vLLM holds at most model.max_seq_length tokens per sequence, and refuses a prompt that reaches it
        (vllm/v1/engine/input_processor.py _validate_prompt_len). Budget forcing sends each round's output back as
        the next round's prompt, so the longest eval prompt plus the whole budget must fit; refuse it before any
        model loads."""
        longest, name = 0, ""
        for dataset_name, dataset in eval_sets.items():
            texts = [tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
                     for row in dataset]  # rendered and tokenized as evaluation does
            lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else [0]
            if max(lengths) > longest:
                longest, name = max(lengths), dataset_name
        completion = self.max_completion_tokens(tokenizer, think_close)
        if longest + completion > max_seq_length:
            key = "eval.max_new_tokens" if self.mode == "off" else "budget.max_thinking_tokens"
            raise ConfigError(key, f"the longest {name} prompt ({longest} tokens) plus budget={self.mode}'s longest "
                                   f"completion ({completion} tokens) exceeds model.max_seq_length={max_seq_length}, "
                                   "which vLLM cannot generate past: lower it, or raise model.max_seq_length")


@dataclass
class Forced:
    """One completion with its budget-forcing accounting."""

    tokens: list[int] = field(default_factory=list)
    thinking_tokens: int = 0
    waits: int = 0
    forced_close: bool = False        # the cap closed the thinking (the delimiter was appended by us)
    truncated: bool = False           # the last phase hit its token limit without end-of-sequence
    ended: bool = False               # the model emitted end-of-sequence


def _prefix_tokens_before(tokenizer, tokens: list[int], char_position: int) -> int:
    """How many leading tokens decode entirely before `char_position` (binary search on decoded prefixes)."""
    low, high = 0, len(tokens)
    while low < high:
        middle = (low + high + 1) // 2
        if len(tokenizer.decode(tokens[:middle])) <= char_position:
            low = middle
        else:
            high = middle - 1
    return low


def split_at_delimiter(tokenizer, tokens: list[int], delimiter: str) -> tuple[int, int] | None:
    """(tokens before the delimiter, tokens up to and including it), or None when it does not occur."""
    text = tokenizer.decode(tokens)
    start = text.find(delimiter)
    if start < 0:
        return None
    before = _prefix_tokens_before(tokenizer, tokens, start)
    through = _prefix_tokens_before(tokenizer, tokens, start + len(delimiter) - 1) + 1
    return before, min(through, len(tokens))


class BudgetForcer:
    def __init__(self, engine: Engine, tokenizer, budget: Budget, think_close: str):
        self.engine = engine
        self.tokenizer = tokenizer
        self.budget = budget
        self.think_close = think_close
        self.close_ids = self._encode(think_close + budget.answer_prefix)
        self.wait_ids = self._encode(budget.wait_text)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def run(self, prompts: list[list[int]], sampling: Sampling) -> list[Forced]:
        if self.budget.mode == "off":
            return self._unforced(prompts, sampling)
        states = [Forced() for _ in prompts]
        thinking = list(range(len(prompts)))
        while thinking:
            thinking = self._think_step(prompts, states, thinking, sampling)
        answering = [i for i, s in enumerate(states) if not s.ended]
        if answering:
            outputs = self.engine.generate([prompts[i] + states[i].tokens for i in answering],
                                           self.budget.max_answer_tokens, [], sampling)
            for i, out in zip(answering, outputs):
                states[i].tokens += out.tokens
                states[i].ended = out.ended
                states[i].truncated = not out.ended and len(out.tokens) >= self.budget.max_answer_tokens
        return states

    def _unforced(self, prompts, sampling) -> list[Forced]:
        outputs = self.engine.generate(prompts, self.budget.max_new_tokens, [], sampling)
        forced = []
        for out in outputs:
            split = split_at_delimiter(self.tokenizer, out.tokens, self.think_close)
            forced.append(Forced(
                tokens=out.tokens,
                thinking_tokens=split[0] if split else len(out.tokens),
                ended=out.ended,
                truncated=not out.ended and len(out.tokens) >= self.budget.max_new_tokens,
            ))
        return forced

    def _think_step(self, prompts, states: list[Forced], active: list[int], sampling) -> list[int]:
        """One generation round for the items still thinking; returns those that must think on."""
        cap = self.budget.max_thinking_tokens
        limit = max(cap - states[i].thinking_tokens for i in active)
        outputs = self.engine.generate([prompts[i] + states[i].tokens for i in active], limit,
                                       [self.think_close], sampling)
        still_thinking = []
        for i, out in zip(active, outputs):
            state, room = states[i], cap - states[i].thinking_tokens
            new = out.tokens[:room]  # rows of one batch share the largest limit: cut each to its own room
            split = split_at_delimiter(self.tokenizer, new, self.think_close)
            if split is not None:
                before, through = split
                extend = (self.budget.mode == "extend" and state.waits < self.budget.num_ignore
                          and state.thinking_tokens + before + len(self.wait_ids) < cap)
                if extend:
                    state.tokens += new[:before] + self.wait_ids
                    state.thinking_tokens += before + len(self.wait_ids)
                    state.waits += 1
                    still_thinking.append(i)
                else:  # thinking closed by the model itself: it answers in the answer phase
                    state.tokens += new[:through]
                    state.thinking_tokens += before
            elif out.ended and len(out.tokens) <= room:  # ended without ever closing its thinking
                state.tokens += new
                state.thinking_tokens += len(new)
                state.ended = True
            else:  # the cap: close the thinking for the model
                state.tokens += new + self.close_ids
                state.thinking_tokens += len(new)
                state.forced_close = True
        return still_thinking
