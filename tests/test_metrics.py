"""Accuracy, confidence intervals, baselines and maj@k on hand-checked numbers."""
import pytest

from medgrpo.evaluation.metrics import dataset_metrics, majority_baseline, majority_vote, wilson_interval


def test_wilson_interval_known_values():
    low, high = wilson_interval(55, 100)
    assert low == pytest.approx(0.4524, abs=1e-3) and high == pytest.approx(0.6438, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-3)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_majority_baseline_is_the_always_yes_score():
    assert majority_baseline(["yes"] * 276 + ["no"] * 169 + ["maybe"] * 55) == pytest.approx(0.552)


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_seen():
    assert majority_vote([None, "B", "C", "C", None]) == "C"
    assert majority_vote(["A", "B"]) == "A"
    assert majority_vote([None, None]) is None


def row(item, correct, extracted, answer="yes", **extra):
    base = dict(id=item, correct=correct, correct_strict=correct, has_answer_block=True, extracted=extracted,
                answer=answer, completion_tokens=10, thinking_tokens=6, truncated=False, waits=0)
    return {**base, **extra}


def test_dataset_metrics_single_sample():
    rows = [row("a", True, "yes"), row("b", False, "no"), row("c", True, "no", answer="no", truncated=True),
            row("d", False, None, has_answer_block=False, correct_strict=False)]
    metrics = dataset_metrics(rows, num_samples=1)
    assert metrics["accuracy"] == 0.5
    assert metrics["format_rate"] == 0.75
    assert metrics["truncation_rate"] == 0.25
    assert metrics["majority_baseline"] == 0.75  # 3 of 4 gold answers are "yes"
    assert metrics["n_items"] == 4
    assert metrics["accuracy_ci_low"] < 0.5 < metrics["accuracy_ci_high"]
    assert "maj@1" not in metrics


def test_dataset_metrics_majority_at_k():
    rows = [row("a", True, "yes"), row("a", True, "yes"), row("a", False, "no"),    # vote yes: right
            row("b", False, "no"), row("b", False, "no"), row("b", True, "yes"),    # vote no: wrong, pass@3 right
            row("c", False, None), row("c", False, None), row("c", False, None)]    # nothing extracted
    metrics = dataset_metrics(rows, num_samples=3)
    assert metrics["maj@3"] == pytest.approx(1 / 3)
    assert metrics["pass@3"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(3 / 9)
    assert metrics["n_items"] == 3
