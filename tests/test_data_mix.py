"""The training mix end to end: weights, balancing, the prompt-length filter, the leakage guard, config
validation, caching, and data=samples through prepare_train / prepare_eval."""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from medgrpo.data import FEATURES, check_leakage, prepare_eval, prepare_train, validate_data_config
from medgrpo.data.mix import balanced_order, mix_sources, rows_needed
from medgrpo.data.prepare import to_dataset
from medgrpo.data.render import prompt_token_lengths
from medgrpo.errors import ConfigError, DataError
from medgrpo.prompting import PromptFormat

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
FORMAT = PromptFormat(system="Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>")


def data_cfg(name: str = "samples", overrides=(), full: bool = False):
    """cfg.data of data=<name>; full=True composes the whole run config (the command-line syntax users type)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        if full:
            return compose(config_name="config", overrides=[f"data={name}", *overrides]).data
        return compose(config_name=f"data/{name}", overrides=list(overrides)).data


def pool(name: str, n: int, labels=("yes",)) -> Dataset:
    columns = {"id": [f"{name}:{i}" for i in range(n)], "source": [name] * n, "question": [f"{name} q{i}" for i in range(n)],
               "answer": [labels[i % len(labels)] for i in range(n)], "answer_type": ["yesno"] * n, "choices": [[]] * n}
    prompts = [[{"role": "user", "content": q}] for q in columns["question"]]
    return to_dataset(columns, list(range(n)), prompts)


def test_mix_proportions_over_10k_items_match_the_weights():
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    pools = {n: pool(n, 10_000) for n in weights}
    mixed, effective = mix_sources(pools, weights, seed=7, stopping_strategy="first_exhausted", train_size=10_000)
    assert len(mixed) == 10_000 and mixed.features == FEATURES
    for name, w in weights.items():
        assert abs(effective[name] / 10_000 - w) <= 0.02, (name, effective)
    again, _ = mix_sources(pools, weights, seed=7, stopping_strategy="first_exhausted", train_size=10_000)
    assert again["id"][:100] == mixed["id"][:100]  # seeded: the same mix twice
    other, _ = mix_sources(pools, weights, seed=8, stopping_strategy="first_exhausted", train_size=10_000)
    assert other["id"][:100] != mixed["id"][:100]


def test_rows_needed_checks_only_what_the_mix_can_draw():
    needed = rows_needed({"big": 200_000, "small": 7_000}, {"big": 0.7, "small": 0.3}, "first_exhausted", None)
    assert needed["small"] == 7_000                      # the scarce pool ends the mix: all of it
    assert 16_333 < needed["big"] < 20_000               # ~0.7 * 23,333 plus a margin, not 200k
    assert rows_needed({"a": 50, "b": 60}, {"a": 0.5, "b": 0.5}, "all_exhausted", None) == {"a": 50, "b": 60}


def test_label_balancing_down_and_up():
    labels = ["yes"] * 90 + ["no"] * 10
    down = balanced_order(labels, "downsample", np.random.default_rng(0))
    assert Counter(labels[i] for i in down) == {"yes": 10, "no": 10} and len(set(down)) == 20
    up = balanced_order(labels, "upsample", np.random.default_rng(0))
    assert Counter(labels[i] for i in up) == {"yes": 90, "no": 90} and set(range(90, 100)) <= set(up)
    assert sorted(balanced_order(labels, "none", np.random.default_rng(0))) == list(range(100))


def test_leakage_guard_catches_a_planted_duplicate_by_id_and_by_text():
    train = {"id": ["pool:111", "pool:222", "gsm:5"], "source": ["pool", "pool", "gsm"],
             "question": ["Does aspirin reduce stroke risk?", "Is X safe?", "Tom has 3 apples. How many?"]}
    evals = {"pubmedqa": {"id": ["pubmedqa:222", "pubmedqa:999"], "source": ["pubmedqa"] * 2,
                          "question": ["Unrelated question?", "Another one?"]},
             "gsm8k": {"id": ["gsm8k:0"], "source": ["gsm8k"], "question": ["tom has 3 apples -- how many"]}}
    namespaces = {"pool": "pubmed", "pubmedqa": "pubmed", "gsm": None, "gsm8k": None}
    with pytest.raises(DataError, match=r"leakage: 2 evaluation items .*pubmedqa: 1 \(id 1, text 0\).*gsm8k: 1 \(id 0, text 1\)"
                                        r".*data\.allow_leakage=true"):
        check_leakage(train, evals, allow=False, namespaces=namespaces)
    report = check_leakage(train, evals, allow=True, namespaces=namespaces)
    assert report["overlap"] == 2 and report["per_eval"]["pubmedqa"]["by_id"] == 1
    # row-number ids ("gsm:5" vs "gsm8k:5") are not compared across datasets without a namespace
    assert check_leakage({"id": ["gsm:0"], "source": ["gsm"], "question": ["a"]},
                         {"gsm8k": {"id": ["gsm8k:0"], "source": ["gsm8k"], "question": ["b"]}},
                         allow=False, namespaces=namespaces)["overlap"] == 0


def test_prepare_train_fails_on_a_leaked_test_item(tiny_tokenizer, tmp_path):
    # the labelled pool file now also holds two official test ids, and its exclude list is switched off
    cfg = data_cfg(overrides=[f"data.cache_dir={tmp_path}",
                              f"data.sources.pubmedqa_labeled_pool.local.path={FIXTURES / 'pqa_labeled.jsonl'}",
                              f"data.sources.pubmedqa.local.path={FIXTURES / 'pqa_labeled.jsonl'}",
                              "data.sources.pubmedqa_labeled_pool.ids.exclude=null"])
    with pytest.raises(DataError, match=r"leakage: 2 evaluation items .*pubmedqa: 2 \(id 2, text 2\)"):
        prepare_train(cfg, tiny_tokenizer, FORMAT, seed=0, max_prompt_tokens=None)
    with open_dict(cfg):
        cfg.allow_leakage = True
    _, report = prepare_train(cfg, tiny_tokenizer, FORMAT, seed=0, max_prompt_tokens=None)
    assert report["leakage"]["overlap"] == 2 and report["leakage"]["allowed"] is True


def test_lengths_equal_apply_chat_template(tiny_tokenizer):
    prompts = [[{"role": "system", "content": FORMAT.system}, {"role": "user", "content": "Is 17 prime? " * k}]
               for k in (1, 5, 40)]
    expected = [len(tiny_tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)
                    ["input_ids"]) for p in prompts]
    assert prompt_token_lengths(tiny_tokenizer, prompts) == expected


def test_length_filter_reports_per_source_losses_warns_and_fails(tiny_tokenizer, tmp_path, caplog):
    budget = 450  # tokens: most GSM8K prompts fit, most PubMedQA prompts (with abstracts) do not
    cfg = data_cfg(overrides=[f"data.cache_dir={tmp_path}", "data.length_filter.max_drop_fraction=1.0"])
    with caplog.at_level(logging.WARNING, logger="medgrpo.data"):
        _, report = prepare_train(cfg, tiny_tokenizer, FORMAT, seed=0, max_prompt_tokens=budget)
    pubmed = report["sources"]["pubmedqa_labeled_pool"]["length_filter"]
    gsm = report["sources"]["gsm8k_train"]["length_filter"]
    assert pubmed["dropped"] > 0.2 * pubmed["checked"] and pubmed["kept"] + pubmed["dropped"] == pubmed["checked"]
    assert gsm["dropped"] == 0 and gsm["longest_prompt_tokens"] <= budget
    assert "source 'pubmedqa_labeled_pool': the prompt-length filter drops" in caplog.text
    assert "gsm8k_train" not in caplog.text
    cfg = data_cfg(overrides=[f"data.cache_dir={tmp_path}", "data.length_filter.max_drop_fraction=0.2"])
    with pytest.raises(DataError, match=r"source 'pubmedqa_labeled_pool': the prompt-length filter drops \d+ of 150 .*"
                                        r"max_drop_fraction=0.2"):
        prepare_train(cfg, tiny_tokenizer, FORMAT, seed=0, max_prompt_tokens=budget)


@pytest.mark.parametrize("override,key", [
    ("+data.mix.nonexistent=0.5", "data.mix.nonexistent"),
    ("data.mix.gsm8k_train=-1", "data.mix.gsm8k_train"),
    ("data.eval=[pubmedqa,medqa]", "data.eval"),
    ("data.sources.gsm8k_train.local.path=data/samples/gsm8k/missing.jsonl", "data.sources.gsm8k_train.local.path"),
    ("data.sources.gsm8k_train.fields.question=null", "data.sources.gsm8k_train.fields.question"),
    ("data.sources.gsm8k_train.template='{question} {hint}'", "data.sources.gsm8k_train.template"),
    ("data.sources.pubmedqa_labeled_pool.answer_type=number", "data.sources.pubmedqa_labeled_pool.answer_type"),
    ("+data.mix.pubmedqa=0.1", "data.mix.pubmedqa"),                      # an evaluation set in the training mix
    ("+data.balance.gsm8k_train=downsample", "data.balance.gsm8k_train"),  # numeric answers have no labels
    ("data.length_filter.max_drop_fraction=2", "data.length_filter.max_drop_fraction"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        validate_data_config(data_cfg(overrides=[override]))
    assert error.value.key == key


def test_all_zero_weights_and_a_new_source_added_from_the_command_line():
    with pytest.raises(ConfigError, match="all weights are zero"):
        validate_data_config(data_cfg(overrides=["data.mix.gsm8k_train=0", "data.mix.pubmedqa_labeled_pool=0"]))
    plan = validate_data_config(data_cfg(overrides=[
        "+data/sources@data.sources.medqa=medqa", f"data.sources.medqa.local.path={FIXTURES / 'medqa.jsonl'}",
        "data.eval=[pubmedqa,medqa]", "data.mix.gsm8k_train=1", "data.mix.pubmedqa_labeled_pool=3"], full=True))
    assert plan.mix == {"pubmedqa_labeled_pool": 0.75, "gsm8k_train": 0.25} and plan.eval == ("pubmedqa", "medqa")


def test_default_mix_validates_without_any_download():
    plan = validate_data_config(data_cfg("default"))
    assert plan.mix == pytest.approx({"pubmedqa_artificial": 0.7, "gsm8k_train": 0.15, "health_benchmarks": 0.15})
    assert plan.eval == ("pubmedqa", "mmlu_medical", "medmcqa", "medqa", "gsm8k")
    assert not any(s.is_local for s in plan.sources.values())


def test_samples_train_and_eval_with_cache(tiny_tokenizer, tmp_path):
    cfg = data_cfg(overrides=[f"data.cache_dir={tmp_path}"])
    train, report = prepare_train(cfg, tiny_tokenizer, FORMAT, seed=3, max_prompt_tokens=1024)
    assert train.features == FEATURES and report["cache"] == "miss"
    assert report["mixed_total"] == len(train) == sum(s["mixed"] for s in report["sources"].values())
    assert report["sources"]["pubmedqa_labeled_pool"]["label_counts"] == {"maybe": 19, "no": 52, "yes": 79}
    row = train[0]
    assert row["prompt"][0] == {"role": "system", "content": FORMAT.system} and row["prompt"][1]["role"] == "user"
    assert row["id"].startswith(row["source"] + ":")
    json.dumps(report)  # goes into results.json as is
    again, report2 = prepare_train(cfg, tiny_tokenizer, FORMAT, seed=3, max_prompt_tokens=1024)
    assert report2["cache"] == "hit" and again["id"] == train["id"]

    evals, eval_report = prepare_eval(cfg, tiny_tokenizer, FORMAT, max_prompt_tokens=1024, limit=20)
    assert sorted(evals) == ["gsm8k", "mmlu_medical", "pubmedqa"] and all(len(d) == 20 for d in evals.values())
    assert set(evals["pubmedqa"]["answer"]) <= {"yes", "no", "maybe"}
    assert eval_report["sources"]["pubmedqa"]["majority_baseline"] > 0.3
    bigger, _ = prepare_eval(cfg, tiny_tokenizer, FORMAT, max_prompt_tokens=1024, limit=40)
    assert bigger["pubmedqa"]["id"][:20] == evals["pubmedqa"]["id"]  # a larger limit extends the same order
