"""evaluate() end to end on known completions: a scripted engine (a test double for the model) returns chosen
token sequences, built from tokens of the tiny tokenizer, and every number below is worked out by hand."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from medgrpo.evaluation.budget import Budget
from medgrpo.evaluation.engine import Generated
from medgrpo.evaluation.evaluate import evaluate

SYSTEM = "Respond with <reasoning>...</reasoning><answer>...</answer>."
MAX_NEW_TOKENS = 12
R, R_, A, A_ = "<reasoning>", "</reasoning>", "<answer>", "</answer>"

# item -> (gold, answer type, three completions as lists of pieces; each piece below is one token, except the
# sentence "The answer is yes." (8 tokens); the last pubmedqa completion never stops and is cut at 12 tokens)
ITEMS = {
    "pubmedqa": {
        "q1": ("yes", [[R, "ok", R_, A, "yes", A_], ["ok", "\n", "The answer is yes."], [R, "so", R_, A, "no", A_]]),
        "q2": ("no", [[R, R_, A, "maybe", A_], [R, R_, A, "maybe", A_], [R, "ok", "so", R_, A, "no", A_]]),
        "q3": ("maybe", [[A, "yes", A_], [A, "yes", A_], [R] + ["ok"] * 40]),
    },
    "gsm8k": {
        "g1": ("18", [[R, "ok", R_, A, "1", "8", A_], ["####", " ", "1", "8"], [A, "1", "7", A_]]),
        "g2": ("7", [[A, "7", A_]] * 3),
    },
}
ANSWER_TYPES = {"pubmedqa": "yesno", "gsm8k": "numeric"}


class ScriptedEngine:
    """The Engine protocol: each sequence continues with the next scripted completion of the item whose question
    it holds, cut at max_new_tokens (then not ended, as a real engine reports a length stop)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.queues = {item: [self.encode(pieces) for pieces in completions]
                       for items in ITEMS.values() for item, (_, completions) in items.items()}

    def encode(self, pieces):
        return [t for piece in pieces for t in self.tokenizer.encode(piece, add_special_tokens=False)]

    def generate(self, sequences, max_new_tokens, stop_strings, sampling):
        out = []
        for sequence in sequences:
            text = self.tokenizer.decode(sequence)
            [item] = [item for item in self.queues if f"Question {item}?" in text]
            tokens = self.queues[item].pop(0)
            out.append(Generated(tokens[:max_new_tokens], ended=len(tokens) <= max_new_tokens))
        return out


def eval_set(name):
    return [{"id": item, "prompt": [{"role": "system", "content": SYSTEM},
                                    {"role": "user", "content": f"Question {item}?"}],
             "answer": gold, "answer_type": ANSWER_TYPES[name], "choices": None}
            for item, (gold, _) in ITEMS[name].items()]


@pytest.fixture
def evaluated(tiny_tokenizer, tmp_path):
    for piece in (R, R_, A, A_, "yes", "no", "maybe", "ok", "so", "\n", "1", "7", "8", "####", " "):
        assert len(tiny_tokenizer.encode(piece, add_special_tokens=False)) == 1, piece  # the hand counts need it
    assert len(tiny_tokenizer.encode("The answer is yes.", add_special_tokens=False)) == 8
    sets = {name: eval_set(name) for name in ITEMS}
    eval_cfg = OmegaConf.create({"temperature": 0.7, "top_p": 1.0, "num_samples": 3})
    metrics, predictions = evaluate(sets, tiny_tokenizer, ScriptedEngine(tiny_tokenizer), eval_cfg,
                                    Budget(mode="off", max_new_tokens=MAX_NEW_TOKENS), R_, "eval", tmp_path)
    return metrics, predictions, tmp_path, sets


def column(rows, key):
    return [row[key] for row in rows]


def test_each_row_is_graded_lenient_and_strict(evaluated):
    _, predictions, _, _ = evaluated
    rows = predictions["pubmedqa"]
    assert [(r["id"], r["sample"]) for r in rows] == [(q, s) for q in ("q1", "q2", "q3") for s in range(3)]
    assert column(rows, "extracted") == ["yes", "yes", "no", "maybe", "maybe", "no", "yes", "yes", None]
    assert column(rows, "correct") == [True, True, False, False, False, True, False, False, False]
    assert column(rows, "correct_strict") == [True, False, False, False, False, True, False, False, False]
    assert column(rows, "has_answer_block") == [True, False, True, True, True, True, True, True, False]
    rows = predictions["gsm8k"]
    assert column(rows, "extracted") == ["18", "18", "17", "7", "7", "7"]
    assert column(rows, "correct") == [True, True, False, True, True, True]
    assert column(rows, "correct_strict") == [True, False, False, True, True, True]


def test_token_counts_thinking_and_truncation(evaluated):
    _, predictions, _, _ = evaluated
    rows = predictions["pubmedqa"]
    assert column(rows, "completion_tokens") == [6, 10, 6, 5, 5, 7, 3, 3, 12]
    # thinking = the tokens before </reasoning>; without it, the whole completion
    assert column(rows, "thinking_tokens") == [2, 10, 2, 1, 1, 3, 3, 3, 12]
    assert column(rows, "truncated") == [False] * 8 + [True]
    assert column(rows, "waits") == [0] * 9 and column(rows, "forced_close") == [False] * 9
    assert column(predictions["gsm8k"], "completion_tokens") == [7, 4, 4, 3, 3, 3]


def test_accuracy_majority_vote_and_pass_at_k(evaluated):
    metrics, _, _, _ = evaluated
    expected = {
        "pubmedqa": {"accuracy": 3 / 9, "accuracy_strict": 2 / 9, "format_rate": 7 / 9, "maj@3": 1 / 3,
                     "pass@3": 2 / 3, "majority_baseline": 1 / 3, "mean_completion_tokens": 57 / 9,
                     "mean_thinking_tokens": 37 / 9, "truncation_rate": 1 / 9, "mean_waits": 0.0, "n_items": 3},
        # g1 votes 18, 18, 17: the majority is right although one sample is wrong
        "gsm8k": {"accuracy": 5 / 6, "accuracy_strict": 4 / 6, "format_rate": 5 / 6, "maj@3": 1.0, "pass@3": 1.0,
                  "mean_completion_tokens": 24 / 6, "truncation_rate": 0.0, "n_items": 2},
    }
    for name, values in expected.items():
        for key, value in values.items():
            assert metrics[f"eval/{name}/{key}"] == pytest.approx(value), f"{name}/{key}"


def test_the_predictions_file_holds_every_row(evaluated, tiny_tokenizer):
    _, predictions, folder, sets = evaluated
    assert sorted(p.name for p in folder.iterdir()) == ["gsm8k.jsonl", "pubmedqa.jsonl"]
    for name, rows in predictions.items():
        written = [json.loads(line) for line in (folder / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert written == rows
        for row in written:
            item = next(i for i in sets[name] if i["id"] == row["id"])
            assert row["answer"] == item["answer"]
            assert row["prompt"] == tiny_tokenizer.apply_chat_template(item["prompt"], add_generation_prompt=True,
                                                                        tokenize=False)
    first, second = predictions["pubmedqa"][:2]
    assert first["completion"] == "<reasoning>ok</reasoning><answer>yes</answer>"
    assert second["completion"] == "ok\nThe answer is yes."
