"""Cost, transitions, option shuffling and per-source accuracy: the pure functions, on hand-worked values, and
the ablation report sections they feed (on job folders written here, no model)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medgrpo.analysis.cost import cost_per_1k_items, pareto_front
from medgrpo.analysis.jobs import load_sweep_rows
from medgrpo.analysis.report import main
from medgrpo.analysis.transitions import item_transitions
from medgrpo.errors import ConfigError
from medgrpo.evaluation.metrics import item_group, mean_interval, source_metrics
from medgrpo.evaluation.robustness import (
    map_back,
    permutation,
    permute_item,
    robustness_metrics,
    shuffle_count,
)
from medgrpo.grade import grade


def test_pareto_front_keeps_only_undominated_settings():
    # (tokens, accuracy): B is cheaper and better than C; D costs more than B for the same accuracy
    points = [(100, 0.50), (200, 0.70), (300, 0.60), (250, 0.70), (400, 0.75)]
    assert pareto_front(points) == [0, 1, 4]
    assert pareto_front([(10, 0.5), (10, 0.5)]) == [0, 1]  # ties dominate nobody


def test_cost_per_1k_items_is_tokens_times_price():
    # 500 tokens per item x 1,000 items = 500k tokens; at 0.002 per 1k tokens: 1.0
    assert cost_per_1k_items(500, 0.002) == pytest.approx(1.0)


def test_mean_interval_by_hand():
    # values 1, 2, 3: mean 2, sd 1, half-width 1.96 / sqrt(3) = 1.1316
    low, high = mean_interval([1.0, 2.0, 3.0])
    assert (low, high) == pytest.approx((2 - 1.96 / math.sqrt(3), 2 + 1.96 / math.sqrt(3)))
    assert mean_interval([5.0]) == (5.0, 5.0)


def test_item_transitions_by_hand():
    before = {"a": 1.0, "b": 0.0, "c": 1.0, "d": 0.5, "only_before": 1.0}
    after = {"a": 0.0, "b": 1.0, "c": 1.0, "d": 1.0}
    worse, better, shared = item_transitions(before, after)
    assert (worse, better, shared) == (["a"], ["b", "d"], 4)  # 0.5 is not "right": d went wrong -> right


ITEM = {"id": "mmlu:0", "answer": "C", "choices": ["Appendix", "Gallbladder", "Spleen", "Bladder"],
        "prompt": [{"role": "system", "content": "sys"},
                   {"role": "user", "content": "Q?\n\nA. Appendix\nB. Gallbladder\nC. Spleen\nD. Bladder"}]}


def test_permutation_is_seeded_by_item_and_index():
    assert permutation("mmlu:0", 4, 0) == permutation("mmlu:0", 4, 0)
    assert sorted(permutation("mmlu:0", 4, 1)) == [0, 1, 2, 3]
    assert len({tuple(permutation("mmlu:0", 4, j)) for j in range(6)}) > 1


def test_permuted_item_reorders_options_prompt_and_gold():
    item = permute_item(ITEM, [2, 0, 3, 1])  # shown: Spleen, Appendix, Bladder, Gallbladder
    assert item["choices"] == ["Spleen", "Appendix", "Bladder", "Gallbladder"]
    assert item["answer"] == "A"  # Spleen is shown first
    assert item["prompt"][1]["content"].endswith("A. Spleen\nB. Appendix\nC. Bladder\nD. Gallbladder")
    assert ITEM["prompt"][1]["content"].endswith("C. Spleen\nD. Bladder")  # the original is untouched


def test_a_permuted_answer_is_graded_and_mapped_back_to_the_original_option():
    item = permute_item(ITEM, [2, 0, 3, 1])
    graded = grade("<answer>D</answer>", item["answer"], "choice", item["choices"])  # D shown = Gallbladder
    row = map_back({"id": item["id"], "extracted": graded.extracted, "answer": item["answer"],
                    "correct": graded.correct}, item)
    assert (row["extracted"], row["answer"], row["correct"]) == ("B", "C", False)
    right = grade("<answer>A</answer>", item["answer"], "choice", item["choices"])
    assert map_back({"id": "x", "extracted": right.extracted, "answer": "A", "correct": right.correct}, item)[
        "extracted"] == "C"


def test_robustness_metrics_by_hand():
    rows = [  # item 1: C under both orders (right); item 2: A then B (once right); item 3: never answered
        {"id": "1", "extracted": "C", "correct": True}, {"id": "1", "extracted": "C", "correct": True},
        {"id": "2", "extracted": "A", "correct": True}, {"id": "2", "extracted": "B", "correct": False},
        {"id": "3", "extracted": None, "correct": False}, {"id": "3", "extracted": None, "correct": False},
    ]
    metrics = robustness_metrics(rows)
    assert metrics["shuffle_accuracy"] == pytest.approx(3 / 6)
    assert metrics["shuffle_consistency"] == pytest.approx(1 / 3)
    assert metrics["shuffle_n_items"] == 3
    assert metrics["shuffle_accuracy_ci_low"] < 0.5 < metrics["shuffle_accuracy_ci_high"]


@pytest.mark.parametrize("bad", [-1, 1.5, "two", True])
def test_a_bad_shuffle_count_names_the_key(bad):
    with pytest.raises(ConfigError, match="eval.shuffle_options"):
        shuffle_count({"shuffle_options": bad})
    assert shuffle_count({}) == 0


def test_item_group_reads_the_subject_then_the_id_part():
    assert item_group({"id": "mmlu_medical:7", "meta": {"specialty": "anatomy"}}) == "anatomy"
    assert item_group({"id": "mmlu_medical:college_medicine:7", "meta": None}) == "college_medicine"
    assert item_group({"id": "pubmedqa:123", "meta": {}}) is None


def test_source_metrics_by_hand():
    rows = [{"id": f"m:{i}", "correct": ok, "meta": {"specialty": subject}}
            for i, (subject, ok) in enumerate([("anatomy", True), ("anatomy", False), ("genetics", True)])]
    metrics = source_metrics(rows)
    assert metrics["by_source/anatomy/accuracy"] == 0.5
    assert metrics["by_source/anatomy/n_items"] == 2
    assert metrics["by_source/genetics/accuracy"] == 1.0
    assert source_metrics(rows[:2]) == {}  # one source: nothing to break down


def _job(sweep: Path, num: int, waits: int, correct: list[bool], tokens: int) -> None:
    job = sweep / f"{num}_budget.num_waits={waits}"
    (job / "predictions").mkdir(parents=True)
    rows = [{"id": f"mmlu_medical:{i}", "correct": ok, "correct_strict": ok, "completion_tokens": tokens,
             "meta": {"specialty": "anatomy" if i < 2 else "genetics"}} for i, ok in enumerate(correct)]
    (job / "predictions" / "mmlu_medical.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    accuracy = sum(correct) / len(correct)
    metrics = {"eval/mmlu_medical/accuracy": accuracy, "eval/mmlu_medical/accuracy_ci_low": accuracy / 2,
               "eval/mmlu_medical/accuracy_ci_high": min(1.0, accuracy * 1.5),
               "eval/mmlu_medical/mean_completion_tokens": tokens,
               "eval/mmlu_medical/mean_completion_tokens_ci_low": tokens - 5,
               "eval/mmlu_medical/mean_completion_tokens_ci_high": tokens + 5,
               "eval/mmlu_medical/majority_baseline": 0.25,
               **{f"eval/mmlu_medical/{k}": v for k, v in source_metrics(rows).items()},
               "eval/mmlu_medical/shuffle_accuracy": accuracy, "eval/mmlu_medical/shuffle_consistency": 0.5}
    (job / "results.json").write_text(json.dumps({"status": "ok", "overrides": [f"budget.num_waits={waits}"],
                                                  "seed": 0, "metrics": metrics}))


@pytest.fixture
def budget_sweep(tmp_path) -> Path:
    sweep = tmp_path / "multirun" / "grpo" / "2026-12-01_10-00-00"
    _job(sweep, 0, 1, [True, True, False, False], 100)
    _job(sweep, 1, 2, [True, False, True, True], 200)  # item 1 right -> wrong, items 2 and 3 wrong -> right
    _job(sweep, 2, 4, [True, False, True, False], 400)  # dominated by waits=2: off the Pareto front
    difficulty = tmp_path / "difficulty.json"
    difficulty.write_text(json.dumps({"datasets": {"mmlu_medical": {
        "mmlu_medical:0": 1.0, "mmlu_medical:1": 0.5, "mmlu_medical:2": 0.0, "mmlu_medical:3": 0.2}}}))
    return sweep


def test_report_sections_cost_transitions_difficulty_sources_robustness(budget_sweep, capsys):
    out = budget_sweep / "ablation"
    assert main(["--sweep", str(budget_sweep), "--price-per-1k-tokens", "0.5",
                 "--difficulty", str(budget_sweep.parents[2] / "difficulty.json")]) == 0
    text = (out / "ablation.md").read_text()
    assert "![cost_eval_mmlu_medical_accuracy.png](cost_eval_mmlu_medical_accuracy.png)" in text
    assert (out / "cost_eval_mmlu_medical_accuracy.png").stat().st_size > 1000
    assert "| budget.num_waits=1 → budget.num_waits=2 | 4 | 1 | 2 | +1 |" in text
    link = "../1_budget.num_waits=2/predictions/mmlu_medical.jsonl"
    assert f"right → wrong: [`mmlu_medical:1`]({link})" in text
    # bins from the file: easy {0}, medium {1}, hard {2, 3}; waits=2 gets 1/1, 0/1 and 2/2
    assert "| setting | easy (n=1) | medium (n=1) | hard (n=2) |" in text
    row = next(line for line in text.splitlines() if line.startswith("| budget.num_waits=2 |") and "hard" not in line
               and "1.000 [" in line and "0.000 [" in line)
    assert row.count("†") == 3  # one job per setting: each bin's own item-clustered interval
    assert "| setting | anatomy | genetics |" in text
    assert "accuracy over option orders" in text and "same answer under all orders" in text
    header = (out / "ablation.csv").read_text().splitlines()[0]
    assert "eval/mmlu_medical/difficulty/hard/accuracy" in header
    assert "eval/mmlu_medical/by_source/anatomy/accuracy_ci_low" in header
    capsys.readouterr()


def test_bins_are_the_same_for_every_row(budget_sweep):
    from medgrpo.analysis.difficulty import load_difficulty
    from medgrpo.analysis.insight import with_difficulty

    rows = with_difficulty(load_sweep_rows(budget_sweep), load_difficulty(budget_sweep.parents[2] / "difficulty.json"))
    counts = {tuple(row.metrics[f"eval/mmlu_medical/difficulty/{b}/n_items"] for b in ("easy", "medium", "hard"))
              for row in rows}
    assert counts == {(1.0, 1.0, 2.0)}
    assert [row.metrics["eval/mmlu_medical/difficulty/hard/accuracy"] for row in rows] == [0.0, 1.0, 0.5]


def test_a_bad_price_or_difficulty_file_is_one_line(budget_sweep, tmp_path, capsys):
    assert main(["--sweep", str(budget_sweep), "--price-per-1k-tokens", "0"]) == 2
    assert "--price-per-1k-tokens must be > 0" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["--sweep", str(budget_sweep), "--difficulty", str(tmp_path / "bad.json")]) == 2
    assert "expected a difficulty.json" in capsys.readouterr().err


def test_the_per_source_wandb_table_reads_the_metrics():
    from medgrpo.evaluation.metrics import source_table

    metrics = {f"eval/mmlu/{k}": v for k, v in source_metrics([
        {"id": "m:0", "correct": True, "meta": {"specialty": "anatomy"}},
        {"id": "m:1", "correct": False, "meta": {"specialty": "virology"}}]).items()}
    table = source_table(metrics, "eval/mmlu/by_source/")
    assert [(row["source"], row["accuracy"], row["n_items"]) for row in table] == [("anatomy", 1.0, 1.0),
                                                                                   ("virology", 0.0, 1.0)]


def test_an_item_without_an_options_block_is_not_shuffled(caplog):
    from medgrpo.evaluation.robustness import permuted_items

    inline = {**ITEM, "id": "inline", "prompt": [{"role": "user", "content": "Q? A) Appendix B) Gallbladder"}]}
    items = permuted_items([ITEM, inline], 3)
    assert [item["id"] for item in items] == ["mmlu:0"] * 3
    assert "1 item(s) do not show their options" in caplog.text


def test_the_new_metrics_are_rates_clipped_to_0_1():
    from medgrpo.analysis.table import is_rate

    for metric in ("eval/m/shuffle_accuracy", "eval/m/shuffle_consistency", "eval/m/by_source/anatomy/accuracy",
                   "eval/m/difficulty/hard/accuracy"):
        assert is_rate(metric), metric
    assert not is_rate("eval/m/mean_completion_tokens")
