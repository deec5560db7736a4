"""Reward functions: values on realistic completions, no credit for tricks, config validation, the YAML groups."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medgrpo.errors import ConfigError
from medgrpo.prompting import PromptFormat
from medgrpo.rewards import (
    REWARDS,
    build_reward_functions,
    check_rewards_applicable,
    correctness,
    needs_judge,
    overlong,
    repetition,
    soft_format,
    strict_format,
    valid_answer,
    xml_count,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "reward"
XML = PromptFormat(system="", think_tag="reasoning")
THINK = PromptFormat(system="", think_tag="think")
# Parameters that some rewards require, and the rule-based rewards (the judge reward has tests/test_judge_*.py).
REQUIRED_PARAMS = {"overlong": {"max_completion_length": 64},
                   **OmegaConf.to_container(OmegaConf.load(CONF / "judge_mix.yaml").params)}
RULE_REWARDS = [name for name in REWARDS if not needs_judge({"weights": {name: 1.0}})]
URINE = ["Bladder", "Kidney", "Ureter", "Urethra"]
PERFECT = ("<reasoning>\nJanet has 16 - 3 - 4 = 9 eggs left and sells them at $2 each: 9 * 2 = 18.\n</reasoning>\n"
           "<answer>\n18\n</answer>\n")
MALFORMED = ["", "<answer>", "<reasoning>\n18</reas", "\ud800<answer>\udcff</answer>", "<answer>" * 50_000,
             "x" * 1_000_000, None, [{"role": "assistant"}]]


def call(fn, completions, **columns):
    """A reward called the way GRPOTrainer calls it (every dataset column plus TRL's own keyword arguments)."""
    columns.setdefault("completion_ids", [[0] * 10 for _ in completions])
    return fn(prompts=[[{"role": "user", "content": "q"}]] * len(completions), completions=completions,
              trainer_state=None, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None, **columns)


def numeric_columns(count: int, gold: str = "18") -> dict:
    return {"answer": [gold] * count, "answer_type": ["numeric"] * count, "choices": [[]] * count}


# ------------------------------------------------------------------------------------------------ format rewards

def test_recipe_format_rewards_on_the_prompts_layout():
    assert call(xml_count, [PERFECT]) == [0.5]
    assert call(soft_format, [PERFECT]) == [0.5]
    assert call(strict_format, [PERFECT]) == [0.5]


def test_format_rewards_use_the_prompt_formats_think_tag():
    qwen3 = PERFECT.replace("reasoning>", "think>")
    assert call(strict_format, [qwen3], think_tag="think") == [0.5]
    assert call(strict_format, [qwen3]) == [0.0]  # asked for <reasoning>, wrote <think>
    assert call(xml_count, [qwen3], think_tag="think") == [0.5]


def test_xml_count_charges_trailing_text_and_never_goes_negative():
    assert call(xml_count, [PERFECT + "Hope this helps!"]) == [pytest.approx(0.5 - 0.016)]
    assert call(xml_count, [PERFECT + "x" * 10_000]) == [0.0]
    assert call(xml_count, ["<reasoning>\nonly this\n</reasoning>\n"]) == [0.25]


@pytest.mark.parametrize("completion, soft, strict", [
    ("<reasoning>\nA\nmulti-line\nreasoning\n</reasoning>\n<answer>\nB\n</answer>", 0.5, 0.5),
    ("<reasoning>x</reasoning><answer>B</answer>", 0.5, 0.0),                 # tags not on their own lines
    ("<reasoning>\nx\n</reasoning>\n<answer>\nB\n</answer>\nBye.", 0.5, 0.0),  # text after the answer
    ("<reasoning>\n\n</reasoning>\n<answer>\nB\n</answer>", 0.5, 0.0),         # empty reasoning
    ("<reasoning>\nx\n</reasoning>\n<answer>\n\n</answer>", 0.5, 0.0),         # empty answer
    ("<reasoning>\nx\n</reasoning>\nSo:\n<answer>\nB\n</answer>", 0.0, 0.0),   # text between the blocks
    ("<answer>\nB\n</answer>\n<reasoning>\nx\n</reasoning>", 0.0, 0.0),        # wrong order
    ("<reasoning>\nx\n</reasoning>\n<answer>\nA\n</answer>\n<answer>\nB\n</answer>", 0.0, 0.0),  # two answers
    ("<reasoning>\nx\n<reasoning>\ny\n</reasoning>\n<answer>\nB\n</answer>", 0.0, 0.0),  # nested reasoning
    ("B", 0.0, 0.0),
])
def test_soft_and_strict_format(completion, soft, strict):
    assert call(soft_format, [completion]) == [soft]
    assert call(strict_format, [completion]) == [strict]


# ------------------------------------------------------------------------------------------------ answer rewards

def test_valid_answer_means_a_possible_label_for_the_item():
    completions = ["<answer>18</answer>", "<answer>eighteen</answer>", "<answer>Maybe.</answer>",
                   "<answer>B</answer>", "<answer>E</answer>", "<answer>a patient</answer>", "18", "<answer>no</answer>"]
    kinds = ["numeric", "numeric", "yesno", "choice", "choice", "choice", "numeric", None]
    choices = [[], [], [], URINE, URINE, URINE, [], []]
    assert call(valid_answer, completions, answer_type=kinds, choices=choices) == [
        0.5, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, None]


def test_correctness_full_partial_and_none():
    completions = [PERFECT, "She makes 9 * 2 = $18 every day.", "<answer>\n17\n</answer>",
                   [{"role": "assistant", "content": PERFECT}], PERFECT]
    columns = numeric_columns(5)
    columns["answer"][-1] = ""  # a row without a gold answer: the reward does not apply
    assert call(correctness, completions, **columns) == [2.0, 1.0, 0.0, 2.0, None]
    assert call(correctness, completions[:2], partial_credit=0.0, **numeric_columns(2)) == [2.0, 0.0]


def test_correctness_on_a_mixed_batch():
    completions = ["<answer>no</answer>", "<answer>(B)</answer>", "<answer>Kidney</answer>", "<answer>72</answer>"]
    columns = {"answer": ["no", "B", "B", "72"], "answer_type": ["yesno", "choice", "choice", "numeric"],
               "choices": [[], URINE, URINE, []]}
    assert call(correctness, completions, **columns) == [2.0, 2.0, 2.0, 2.0]


HACKS = [  # (completion, gold, answer type, choices)
    ("<answer>A, B, C, D</answer>", "C", "choice", URINE),
    ("<answer>A or B</answer>", "A", "choice", URINE),
    ("The answer is A, B, C or D.", "B", "choice", URINE),
    ("<answer>A</answer>\n<answer>B</answer>\n<answer>C</answer>\n<answer>D</answer>", "D", "choice", URINE),
    ("<answer>yes</answer><answer>no</answer><answer>maybe</answer>", "maybe", "yesno", []),
    ("<answer>14</answer>", "4", "numeric", []),
    ("<answer>$1,445</answer>", "44", "numeric", []),
    ("<answer>I know</answer>", "no", "yesno", []),
    ("<answer>Unknown</answer>", "no", "yesno", []),
    ("<answer></answer>", "yes", "yesno", []),
    ("<answer>   </answer>", "18", "numeric", []),
    ("<reasoning>\nSo the answer is yes.\n</reasoning>", "yes", "yesno", []),
    ("<reasoning>\n9 * 2 = 18, the answer is 18\n</reasoning>\n<answer>\n</answer>", "18", "numeric", []),
    ("<answer>yes or no</answer>", "yes", "yesno", []),
    ("<answer>18 or 19</answer>", "19", "numeric", []),
]


def test_reward_hacking_attempts_get_zero_correctness():
    completions, golds, kinds, choices = (list(column) for column in zip(*HACKS))
    rewards = call(correctness, completions, answer=golds, answer_type=kinds, choices=choices)
    assert rewards == [0.0] * len(HACKS), list(zip(completions, rewards))


def test_the_recipes_integer_reward_hack_gets_no_valid_answer_bonus():
    # The recipe gave 0.5 to any multiple-choice answer containing "a"; a valid label is one of the letters.
    assert call(valid_answer, ["<answer>a lot of things</answer>"], answer_type=["choice"], choices=[URINE]) == [0.0]


# ------------------------------------------------------------------------------------------------ penalties

def test_overlong_is_dapos_soft_punishment():
    lengths = [0, 767, 768, 800, 896, 1024]
    ids = [[1] * n for n in lengths]
    rewards = call(overlong, [""] * len(ids), completion_ids=ids, max_completion_length=1024, buffer_fraction=0.25)
    assert rewards == pytest.approx([0.0, 0.0, 0.0, -0.125, -0.5, -1.0])


def test_overlong_needs_completion_ids():
    with pytest.raises(TypeError, match="completion_ids"):
        overlong(prompts=["q"], completions=["a"], max_completion_length=10)


def test_repetition_penalty_counts_repeated_ngrams():
    looping = "the dose is 5 mg " * 20
    varied = "The trial enrolled 120 patients and found a reduction in mortality at one year."
    rewards = call(repetition, [looping, varied, "too short", ""])
    words = looping.split()
    expected = -(1 - 5 / (len(words) - 2))  # 5 distinct trigrams in a 5-word loop
    assert rewards == [pytest.approx(expected), 0.0, 0.0, 0.0]
    assert call(repetition, [looping], ngram_size=6, max_penalty=-0.5)[0] == pytest.approx(-0.5 * (1 - 5 / 95))


# ------------------------------------------------------------------------------------------------ robustness

@pytest.mark.parametrize("name", sorted(RULE_REWARDS))
def test_malformed_completions_score_zero_and_never_raise(name):
    funcs, _ = build_reward_functions({"weights": {name: 1.0}, "params": REQUIRED_PARAMS}, XML)
    columns = numeric_columns(len(MALFORMED), "7")
    rewards = call(funcs[0], MALFORMED, **columns)
    assert len(rewards) == len(MALFORMED)
    assert all(reward in (0.0, None) for reward in rewards), rewards


def test_built_functions_are_named_for_trls_logs_and_picklable():
    funcs, weights = build_reward_functions({"weights": dict.fromkeys(REWARDS, 1.0),
                                             "params": REQUIRED_PARAMS}, THINK)
    assert [fn.__name__ for fn in funcs] == list(REWARDS)
    assert weights == [1.0] * len(REWARDS)
    assert pickle.loads(pickle.dumps(funcs))[2].__name__ == "strict_format"
    qwen3 = PERFECT.replace("reasoning>", "think>")
    assert call(funcs[2], [qwen3]) == [0.5]  # the think tag came from the prompt format


# ------------------------------------------------------------------------------------------------ config

def load_group(name: str):
    """A reward group as the entrypoint sees it: inside a config whose grpo group it can interpolate."""
    root = OmegaConf.create({"grpo": {"max_completion_length": 1024}})
    root.reward = OmegaConf.load(CONF / f"{name}.yaml")
    return root.reward


GROUPS = ["recipe", "weighted", "equal", "correctness_only", "format_only"]
MAXIMUM = {"xml_count": 0.5, "soft_format": 0.5, "strict_format": 0.5, "valid_answer": 0.5, "correctness": 2.0,
           "repetition": 1.0, "overlong": 1.0}


@pytest.mark.parametrize("group", GROUPS)
def test_every_reward_group_builds_and_names_its_command(group):
    first_line = (CONF / f"{group}.yaml").read_text().splitlines()[0]
    assert first_line.startswith(f"# python src/run.py reward={group}")
    funcs, weights = build_reward_functions(load_group(group), XML)
    assert len(funcs) == len(weights) and any(weight > 0 for weight in weights)


def test_weighted_group_is_50_30_20():
    cfg = load_group("weighted")
    funcs, weights = build_reward_functions(cfg, XML)
    share = {fn.__name__: weight * MAXIMUM[fn.__name__] for fn, weight in zip(funcs, weights)}
    total = sum(share.values())
    assert share["correctness"] / total == pytest.approx(0.5)
    assert (share["xml_count"] + share["soft_format"] + share["strict_format"]) / total == pytest.approx(0.3)
    assert (share["valid_answer"] + share["repetition"] + share["overlong"]) / total == pytest.approx(0.2)
    assert funcs[-1].keywords["max_completion_length"] == 1024  # interpolated from grpo


def test_recipe_group_is_the_five_rewards_with_weight_one():
    funcs, weights = build_reward_functions(load_group("recipe"), XML)
    assert sorted(fn.__name__ for fn in funcs) == sorted(
        ["xml_count", "soft_format", "strict_format", "valid_answer", "correctness"])
    assert weights == [1.0] * 5


@pytest.mark.parametrize("cfg, key", [
    ({"weights": {"corectness": 1.0}}, "reward.weights.corectness"),
    ({"weights": {"correctness": -0.5}}, "reward.weights.correctness"),
    ({"weights": {"correctness": 0.0, "xml_count": 0}}, "reward.weights"),
    ({"weights": {"correctness": "high"}}, "reward.weights.correctness"),
    ({"weights": {"correctness": True}}, "reward.weights.correctness"),
    ({"weights": {"correctness": math.nan}}, "reward.weights.correctness"),
    ({"weights": {}}, "reward.weights"),
    ({"weights": ["correctness"]}, "reward.weights"),
    ({"weigths": {"correctness": 1.0}}, "reward.weigths"),
    ({"weights": {"correctness": 1.0}, "params": {"corectness": {}}}, "reward.params.corectness"),
    ({"weights": {"correctness": 1.0}, "params": {"correctness": {"bonus": 3}}}, "reward.params.correctness.bonus"),
    ({"weights": {"correctness": 1.0}, "params": {"correctness": {"partial_credit": 3.0}}},
     "reward.params.correctness.partial_credit"),
    ({"weights": {"overlong": 1.0}}, "reward.params.overlong.max_completion_length"),
    ({"weights": {"overlong": 1.0}, "params": {"overlong": {"max_completion_length": 32, "buffer_fraction": 1.5}}},
     "reward.params.overlong.buffer_fraction"),
    ({"weights": {"repetition": 1.0}, "params": {"repetition": {"max_penalty": 1.0}}},
     "reward.params.repetition.max_penalty"),
    ({"weights": {"repetition": 1.0}, "params": {"repetition": {"ngram_size": 0}}},
     "reward.params.repetition.ngram_size"),
    ({"weights": {"strict_format": 1.0}, "params": {"strict_format": {"think_tag": "think"}}},
     "reward.params.strict_format.think_tag"),
])
def test_bad_reward_config_is_a_config_error_naming_the_key(cfg, key):
    with pytest.raises(ConfigError) as error:
        build_reward_functions(cfg, XML)
    assert error.value.key == key


def test_correctness_on_a_dataset_without_answers_is_refused_before_training():
    columns = ["id", "source", "prompt", "question"]
    with pytest.raises(ConfigError) as error:
        check_rewards_applicable(load_group("recipe"), columns)
    assert error.value.key == "reward.weights.valid_answer" and "answer_type" in str(error.value)
    with pytest.raises(ConfigError) as error:
        check_rewards_applicable({"weights": {"correctness": 1.0}}, columns + ["answer_type"])
    assert error.value.key == "reward.weights.correctness"
    check_rewards_applicable({"weights": {"xml_count": 1.0, "strict_format": 1.0}}, columns)
    check_rewards_applicable(load_group("weighted"), columns + ["answer", "answer_type", "choices"])
