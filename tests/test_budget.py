"""Budget forcing, driven by a scripted character-level 'model' so the exact token sequences can be checked."""
from __future__ import annotations

import pytest

from medgrpo.evaluation.budget import Budget, BudgetForcer, split_at_delimiter
from medgrpo.evaluation.engine import Generated, Sampling

CLOSE = "</r>"
PROMPT = "Q?|"
EOS = "\x00"


class CharTokenizer:
    """One token per character, so token counts are character counts."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, tokens, skip_special_tokens=False):
        return "".join(chr(t) for t in tokens)


class ScriptedEngine:
    """Continues each sequence with `script(completion_so_far)` (EOS-terminated), honouring the engine contract:
    at most max_new_tokens, stopping after a stop string or at EOS. Records every call."""

    def __init__(self, script):
        self.script = script
        self.calls: list[int] = []

    def generate(self, sequences, max_new_tokens, stop_strings, sampling):
        self.calls.append(max_new_tokens)
        results = []
        for seq in sequences:
            completion = "".join(chr(t) for t in seq)[len(PROMPT):]
            text = self.script(completion)
            ended = False
            if EOS in text:
                text, ended = text[: text.index(EOS)], True
            for stop in stop_strings:
                if stop in text:
                    text, ended = text[: text.index(stop) + len(stop)], False
            if len(text) > max_new_tokens:
                text, ended = text[:max_new_tokens], False
            results.append(Generated([ord(c) for c in text], ended))
        return results


def endless_thinker(completion: str) -> str:
    """Never closes its thinking on its own; answers once the delimiter is there."""
    return "B" + EOS if CLOSE in completion else "x" * 10_000


def early_closer(completion: str) -> str:
    """Thinks 'ab', closes, then answers; after a forced 'Wait' it thinks 'ab' again."""
    return "<a>B</a>" + EOS if CLOSE in completion.rsplit("Wait", 1)[-1] else "ab" + CLOSE


def run(script, budget: Budget):
    engine = ScriptedEngine(script)
    forcer = BudgetForcer(engine, CharTokenizer(), budget, CLOSE)
    [result] = forcer.run([[ord(c) for c in PROMPT]], Sampling())
    return "".join(chr(t) for t in result.tokens), result, engine


def test_off_counts_thinking_before_the_delimiter():
    text, result, _ = run(early_closer, Budget(mode="off", max_new_tokens=100))
    assert text == "ab</r>"  # off: one generation, the scripted model stops after closing
    assert result.thinking_tokens == 2 and result.waits == 0 and not result.truncated


def test_off_marks_truncation_at_the_limit():
    text, result, _ = run(endless_thinker, Budget(mode="off", max_new_tokens=12))
    assert text == "x" * 12 and result.truncated and result.thinking_tokens == 12


def test_cap_forces_the_answer_after_max_thinking_tokens():
    budget = Budget(mode="cap", max_thinking_tokens=16, max_answer_tokens=5, answer_prefix="\nA:")
    text, result, engine = run(endless_thinker, budget)
    assert text == "x" * 16 + "</r>\nA:" + "B"
    assert result.thinking_tokens == 16 and result.forced_close and result.ended
    assert engine.calls == [16, 5]


def test_cap_leaves_a_model_that_closes_early_alone():
    budget = Budget(mode="cap", max_thinking_tokens=16, max_answer_tokens=20, answer_prefix="\nA:")
    text, result, _ = run(early_closer, budget)
    assert text == "ab</r><a>B</a>"
    assert result.thinking_tokens == 2 and not result.forced_close and result.waits == 0


def test_cap_truncates_a_long_answer():
    budget = Budget(mode="cap", max_thinking_tokens=4, max_answer_tokens=3, answer_prefix="")
    text, result, _ = run(lambda c: "y" * 50 if CLOSE in c else "x" * 50, budget)
    assert text == "xxxx</r>yyy" and result.truncated and not result.ended


def test_extend_replaces_the_delimiter_with_wait_num_ignore_times():
    budget = Budget(mode="extend", max_thinking_tokens=100, max_answer_tokens=20, num_ignore=2,
                    wait_text="Wait", answer_prefix="")
    text, result, _ = run(early_closer, budget)
    assert text == "abWaitabWaitab</r><a>B</a>"
    assert result.waits == 2
    assert result.thinking_tokens == 2 + 4 + 2 + 4 + 2
    assert not result.forced_close


def test_extend_is_cut_short_by_the_cap():
    budget = Budget(mode="extend", max_thinking_tokens=9, max_answer_tokens=20, num_ignore=5,
                    wait_text="Wait", answer_prefix="|")
    text, result, _ = run(early_closer, budget)
    # round 1: 'ab' + Wait (6 tokens); round 2 has 3 tokens of room: 'ab<' and the cap closes the thinking.
    assert text == "abWaitab<</r>|<a>B</a>"
    assert result.thinking_tokens == 9 and result.waits == 1 and result.forced_close


def test_extend_skips_a_wait_that_would_not_fit_under_the_cap():
    budget = Budget(mode="extend", max_thinking_tokens=7, max_answer_tokens=20, num_ignore=3,
                    wait_text="Wait", answer_prefix="")
    text, result, _ = run(lambda c: "<a>B</a>" + EOS if c.endswith(CLOSE) else "abc" + CLOSE, budget)
    assert text == "abc</r><a>B</a>"  # 3 + 4 ('Wait') = 7 is not below the cap of 7
    assert result.waits == 0 and result.thinking_tokens == 3


def test_a_model_that_ends_without_closing_is_not_forced():
    budget = Budget(mode="cap", max_thinking_tokens=50, max_answer_tokens=5, answer_prefix="")
    text, result, engine = run(lambda c: "just B" + EOS, budget)
    assert text == "just B" and result.ended and result.thinking_tokens == 6 and engine.calls == [50]


@pytest.mark.parametrize("cap", [1, 5, 16, 40])
def test_thinking_never_exceeds_the_cap(cap):
    budget = Budget(mode="extend", max_thinking_tokens=cap, max_answer_tokens=4, num_ignore=10,
                    wait_text="Wait", answer_prefix="")
    for script in (endless_thinker, early_closer):
        _, result, _ = run(script, budget)
        assert result.thinking_tokens <= cap


def test_split_at_delimiter_with_a_real_bpe_tokenizer(tiny_tokenizer):
    tokens = tiny_tokenizer.encode("The patient improved.\n</reasoning>\n<answer>\nyes\n</answer>",
                                   add_special_tokens=False)
    before, through = split_at_delimiter(tiny_tokenizer, tokens, "</reasoning>")
    assert tiny_tokenizer.decode(tokens[:before]) == "The patient improved.\n"
    assert tiny_tokenizer.decode(tokens[:through]).endswith("</reasoning>")
    assert split_at_delimiter(tiny_tokenizer, tokens, "</think>") is None
