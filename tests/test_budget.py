"""Budget forcing, driven by a scripted character-level 'model' so the exact token sequences can be checked."""
from __future__ import annotations

import pytest

from medgrpo.errors import ConfigError
from medgrpo.evaluation.budget import Budget, BudgetForcer, split_at_delimiter
from medgrpo.evaluation.engine import Generated, Sampling
from tests._run import read_jsonl, read_results, run_entrypoint

CLOSE = "</r>"
PROMPT = "Q?|"
EOS = "\x00"


class CharTokenizer:
    """One token per character, so token counts are character counts; a chat is its messages' contents joined."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, tokens, skip_special_tokens=False):
        return "".join(chr(t) for t in tokens)

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False):
        return "".join(message["content"] for message in messages)

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [self.encode(text) for text in texts]}


class ScriptedEngine:
    """Continues each sequence with `script(completion_so_far)` (EOS-terminated), honouring the engine contract:
    at most max_new_tokens, stopping after a stop string or at EOS. Records every call's limit and batch size.
    Prompts end at their first '|'; for a batch, `script` maps each prompt to its own script."""

    def __init__(self, script):
        self.script = script
        self.calls: list[int] = []
        self.batch_sizes: list[int] = []

    def generate(self, sequences, max_new_tokens, stop_strings, sampling):
        self.calls.append(max_new_tokens)
        self.batch_sizes.append(len(sequences))
        results = []
        for seq in sequences:
            prompt, _, completion = "".join(chr(t) for t in seq).partition("|")
            script = self.script[prompt + "|"] if isinstance(self.script, dict) else self.script
            text = script(completion)
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


def test_a_model_that_ends_exactly_at_the_cap_ended_on_its_own():
    budget = Budget(mode="cap", max_thinking_tokens=6, max_answer_tokens=5, answer_prefix="|")
    text, result, engine = run(lambda c: "abcdef" + EOS, budget)  # 6 tokens, then end-of-sequence
    assert text == "abcdef" and result.ended and result.thinking_tokens == 6
    assert not result.forced_close and not result.truncated and engine.calls == [6]  # no answer phase


def test_an_answer_that_ends_exactly_at_its_limit_is_not_truncated():
    budget = Budget(mode="cap", max_thinking_tokens=4, max_answer_tokens=3, answer_prefix="")
    text, result, _ = run(lambda c: "yes" + EOS if CLOSE in c else "x" * 50, budget)
    assert text == "xxxx</r>yes" and result.ended and not result.truncated
    text, result, _ = run(lambda c: "yes" + EOS, Budget(mode="off", max_new_tokens=3))
    assert text == "yes" and result.ended and not result.truncated


def test_a_row_that_ends_exactly_at_its_own_room_in_a_batch_ended_on_its_own():
    """extend, cap 12: row 1 thinks 'ab' (+ Wait: 6, room 6), row 2 'a' (+ Wait: 5, room 7). Round 2 runs with the
    larger limit, 7: row 1 ends after exactly its 6 tokens of room (ended on its own, thinking 12, not forced);
    row 2 closes after 'c' and answers."""
    def row_1(completion):
        return "uvwxyz" + EOS if "Wait" in completion else "ab" + CLOSE

    def row_2(completion):
        if CLOSE in completion:
            return "<a>B</a>" + EOS
        return "c" + CLOSE if "Wait" in completion else "a" + CLOSE

    budget = Budget(mode="extend", max_thinking_tokens=12, max_answer_tokens=20, num_ignore=1, wait_text="Wait",
                    answer_prefix="|")
    texts, results, engine = run_batch({"Q1?|": row_1, "Q2?|": row_2}, budget)
    assert texts == ["abWaituvwxyz", "aWaitc</r><a>B</a>"]
    assert [(r.thinking_tokens, r.waits, r.forced_close, r.ended, r.truncated) for r in results] == [
        (12, 1, False, True, False), (6, 1, False, True, False)]
    assert engine.calls == [12, 7, 20] and engine.batch_sizes == [2, 2, 1]


def test_the_longest_completion_and_the_fit_check_at_max_seq_length():
    """cap: 16 thinking + '</r>' + answer prefix '\\nA:' (7 characters) + 5 answer = 28 tokens; a 10-token prompt
    fits a max_seq_length of 38 exactly, and not 37."""
    budget = Budget(mode="cap", max_thinking_tokens=16, max_answer_tokens=5, answer_prefix="\nA:")
    tokenizer = CharTokenizer()
    assert budget.max_completion_tokens(tokenizer, CLOSE) == 28
    assert Budget(mode="off", max_new_tokens=64).max_completion_tokens(tokenizer, CLOSE) == 64
    eval_sets = {"short": [{"prompt": [{"role": "user", "content": "Q?"}]}],
                 "long": [{"prompt": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Q?"}]}]}
    budget.check_fits(tokenizer, CLOSE, eval_sets, max_seq_length=38)
    with pytest.raises(ConfigError, match=r"budget.max_thinking_tokens.*longest long prompt \(10 tokens\) plus "
                                          r"budget=cap's longest completion \(28 tokens\) exceeds "
                                          r"model.max_seq_length=37"):
        budget.check_fits(tokenizer, CLOSE, eval_sets, max_seq_length=37)
    with pytest.raises(ConfigError, match=r"eval.max_new_tokens.*\(64 tokens\).*=73"):
        Budget(mode="off", max_new_tokens=64).check_fits(tokenizer, CLOSE, eval_sets, max_seq_length=73)


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


def run_batch(scripts: dict, budget: Budget):
    engine = ScriptedEngine(scripts)
    forcer = BudgetForcer(engine, CharTokenizer(), budget, CLOSE)
    results = forcer.run([[ord(c) for c in prompt] for prompt in scripts], Sampling())
    return ["".join(chr(t) for t in r.tokens) for r in results], results, engine


def closes_then_thinks_on(completion: str) -> str:
    """Closes after 'abcde'; after a forced 'Wait' it never closes again."""
    if CLOSE in completion:
        return "<a>B</a>" + EOS
    return "y" * 100 if "Wait" in completion else "abcde" + CLOSE


def test_extend_in_a_batch_cuts_each_row_at_its_own_room():
    """Prompts of three lengths. Round 2 runs two rows with different room left (12-9, then 12-6): the engine
    gets the larger limit, and each row is cut to its own room, so the first row is forced closed at exactly 12."""
    scripts = {"Question two?|": closes_then_thinks_on, "Q?|": early_closer,
               "A much longer third question?|": endless_thinker}
    budget = Budget(mode="extend", max_thinking_tokens=12, max_answer_tokens=20, num_ignore=1, wait_text="Wait",
                    answer_prefix="|")
    texts, results, engine = run_batch(scripts, budget)
    assert texts == ["abcdeWaityyy</r>|<a>B</a>", "abWaitab</r><a>B</a>", "x" * 12 + "</r>|B"]
    assert [r.thinking_tokens for r in results] == [12, 8, 12]
    assert [r.waits for r in results] == [1, 1, 0]
    assert [r.forced_close for r in results] == [True, False, True]
    assert [r.ended for r in results] == [True, True, True] and not any(r.truncated for r in results)
    assert engine.calls == [12, 6, 20] and engine.batch_sizes == [3, 2, 3]


def test_cap_in_a_batch_forces_only_the_rows_that_reach_it():
    scripts = {"Q?|": early_closer, "Second q?|": endless_thinker,
               "Third, longest question?|": lambda c: "the answer is B" + EOS,
               "4|": lambda c: "<a>B</a>" + EOS if CLOSE in c else "abcd" + CLOSE}
    budget = Budget(mode="cap", max_thinking_tokens=8, max_answer_tokens=8, answer_prefix="")
    texts, results, engine = run_batch(scripts, budget)
    # rows 1 and 4 close within the cap of 8 (6 and 8 tokens with the delimiter); row 3 would end after 15: it is
    # cut at 8, closed for it, and its answer phase hits the answer limit
    assert texts == ["ab</r><a>B</a>", "xxxxxxxx</r>B", "the answ</r>the answ", "abcd</r><a>B</a>"]
    assert [r.thinking_tokens for r in results] == [2, 8, 8, 4]
    assert [r.forced_close for r in results] == [False, True, True, False]
    assert [r.truncated for r in results] == [False, False, True, False]
    assert engine.calls == [8, 8] and engine.batch_sizes == [4, 4]


@pytest.mark.slow
def test_budget_cap_through_the_entrypoint_forces_every_row_closed_at_the_cap(tmp_path, model_cache, tiny_tokenizer):
    """The random tiny model never closes its thinking and never stops: every row thinks exactly 16 tokens, gets
    '</reasoning>' + answer_prefix appended by the forcer, then answers for exactly max_answer_tokens."""
    result = run_entrypoint("preset=tiny", "train.enabled=false", "budget=cap", "budget.max_thinking_tokens=16",
                            "budget.max_answer_tokens=8", "eval.limit=3", "data.eval=[pubmedqa,gsm8k]",
                            f"hydra.run.dir={tmp_path}", cache=model_cache.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    results = read_results(tmp_path)
    assert results["config"]["budget"]["max_thinking_tokens"] == 16  # recorded, not redacted
    forced = "</reasoning>" + results["config"]["budget"]["answer_prefix"]
    expected_tokens = 16 + len(tiny_tokenizer.encode(forced, add_special_tokens=False)) + 8
    for name in ("pubmedqa", "gsm8k"):
        rows = read_jsonl(tmp_path / "predictions" / f"{name}.jsonl")
        assert len(rows) == 3
        for row in rows:
            assert (row["thinking_tokens"], row["completion_tokens"]) == (16, expected_tokens)
            assert row["forced_close"] and row["truncated"] and row["waits"] == 0
            assert row["completion"].count("</reasoning>") == 1 and forced in row["completion"]
        metrics = results["metrics"]
        assert metrics[f"eval/{name}/mean_thinking_tokens"] == 16.0
        assert metrics[f"eval/{name}/mean_completion_tokens"] == expected_tokens
        assert metrics[f"eval/{name}/truncation_rate"] == 1.0
