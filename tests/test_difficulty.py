"""Difficulty strata: bins and pass rates by hand, the evaluation job's overrides, and one run of
`python -m medgrpo.analysis.difficulty` through the real entrypoint on the tiny model (which also checks
eval.shuffle_options and the per-subject accuracy in results.json)."""
from __future__ import annotations

import json

import pytest

from medgrpo.analysis.difficulty import base_overrides, bin_metrics, difficulty_bin, pass_rates
from tests._run import read_jsonl, read_results, run_module


@pytest.mark.parametrize(("rate", "name"), [(1.0, "easy"), (0.8, "easy"), (0.79, "medium"), (0.21, "medium"),
                                            (0.2, "hard"), (0.0, "hard")])
def test_bins_by_pass_rate(rate, name):
    assert difficulty_bin(rate) == name


def test_pass_rates_are_the_share_of_correct_samples():
    rows = [{"id": "a", "correct": True}, {"id": "a", "correct": False}, {"id": "a", "correct": True},
            {"id": "a", "correct": True}, {"id": "b", "correct": False}, {"id": "b", "correct": False}]
    assert pass_rates(rows) == {"a": 0.75, "b": 0.0}


def test_bin_metrics_by_hand():
    rates = {"e1": 1.0, "e2": 0.9, "m": 0.5, "h": 0.0}
    rows = [{"id": "e1", "correct": True}, {"id": "e2", "correct": False}, {"id": "m", "correct": True},
            {"id": "h", "correct": False}, {"id": "unknown", "correct": True}]  # not in the file: left out
    metrics = bin_metrics(rows, rates)
    assert metrics["difficulty/easy/accuracy"] == 0.5 and metrics["difficulty/easy/n_items"] == 2
    assert metrics["difficulty/medium/accuracy"] == 1.0 and metrics["difficulty/medium/n_items"] == 1
    assert metrics["difficulty/hard/accuracy"] == 0.0
    # Wilson for 1 of 2: [0.0945, 0.9055]
    assert metrics["difficulty/easy/accuracy_ci_low"] == pytest.approx(0.0945, abs=1e-4)
    assert metrics["difficulty/easy/accuracy_ci_high"] == pytest.approx(0.9055, abs=1e-4)


def test_a_jobs_overrides_are_reused_and_the_evaluation_settings_win(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(
        {"overrides": ["preset=tiny", "lora.rank=8", "eval.num_samples=1", "eval.limit=5",
                       "eval.adapter_path=multirun/x/0/adapter"]}))  # a trained adapter: not the base model
    merged = base_overrides(tmp_path, 4, 0.7, ["eval.limit=3"])
    assert merged == ["preset=tiny", "lora.rank=8", "eval.num_samples=4", "eval.limit=3", "train.enabled=false",
                      "eval.after_training=true", "eval.before_training=false", "eval.during_training_steps=0",
                      "eval.temperature=0.7"]


def test_bad_arguments_are_one_line(tmp_path):
    result = run_module("medgrpo.analysis.difficulty", "--out", str(tmp_path), "--samples", "1", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["difficulty: --samples must be >= 2 for a pass rate between 0 "
                                                  "and 1, got 1"]


@pytest.mark.slow
def test_difficulty_runs_the_entrypoint_on_the_tiny_model(tmp_path):
    out = tmp_path / "difficulty"
    result = run_module("medgrpo.analysis.difficulty", "--out", str(out), "--samples", "2", "preset=tiny",
                        "eval.limit=4", "eval.shuffle_options=2", "data.eval=[mmlu_medical]",
                        "objective=eval/mmlu_medical/accuracy", f"paths.cache_dir={tmp_path / 'cache'}",
                        env={"WANDB_MODE": "offline"}, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    stored = json.loads((out / "difficulty.json").read_text())
    assert stored["samples"] == 2 and "eval.num_samples=2" in stored["overrides"]
    rates = stored["datasets"]["mmlu_medical"]
    predictions = read_jsonl(out / "base_eval" / "predictions" / "mmlu_medical.jsonl")
    assert len(rates) == 4 and len(predictions) == 8  # 4 items x 2 samples
    assert rates == pass_rates(predictions)
    metrics = read_results(out / "base_eval")["metrics"]
    # option-order robustness: 4 items x 2 orders, letters mapped back to the original options
    shuffled = read_jsonl(out / "base_eval" / "predictions" / "mmlu_medical.shuffled.jsonl")
    assert len(shuffled) == 8 and {row["answer"] for row in shuffled} <= {"A", "B", "C", "D"}
    originals = {row["id"]: row["answer"] for row in predictions}
    assert all(row["answer"] == originals[row["id"]] for row in shuffled)  # the gold mapped back
    assert 0 <= metrics["eval/mmlu_medical/shuffle_consistency"] <= 1
    assert metrics["eval/mmlu_medical/shuffle_n_items"] == 4
    # per subject: the bundled sample keeps MMLU's subject in the item's meta
    subjects = [k for k in metrics if k.startswith("eval/mmlu_medical/by_source/") and k.endswith("/accuracy")]
    assert subjects and sum(metrics[k.replace("/accuracy", "/n_items")] for k in subjects) == 4
