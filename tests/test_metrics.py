"""Accuracy, confidence intervals, baselines and maj@k on hand-checked numbers."""
import math

import pytest

from medgrpo.evaluation.metrics import (
    clustered_interval,
    dataset_metrics,
    majority_baseline,
    majority_vote,
    wilson_interval,
)


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
    # k = 1: the design effect is exactly 1 and the interval is Wilson's for 2 of 4
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == pytest.approx((0.15003, 0.84997), abs=1e-5)
    assert (metrics["accuracy_ci_design_effect"], metrics["accuracy_ci_n_effective"]) == (1.0, 4.0)
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


def test_clustered_interval_when_the_samples_of_an_item_agree():
    """k = 3, each item all right or all wrong: 12 completions carry the information of 4 items.
    Cluster-robust variance sum_i (c_i - p m_i)^2 / N^2 = 4 * 1.5^2 / 144 = 1/16; binomial p(1-p)/N = 1/48;
    design effect 3, n_eff 4: Wilson(p=0.5, n=4) = 0.5 -+ 1.96 sqrt(0.0625 + 0.060025) / 1.9604 = [0.1500, 0.8500]."""
    low, high, design_effect, n_effective = clustered_interval([[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]])
    assert (design_effect, n_effective) == pytest.approx((3.0, 4.0))
    assert (low, high) == pytest.approx((0.150035, 0.849965), abs=1e-6)
    assert (low, high) == pytest.approx(wilson_interval(2, 4))
    naive = wilson_interval(6, 12)  # what treating the 12 completions as independent gave: too narrow
    assert naive == pytest.approx((0.253778, 0.746222), abs=1e-6)


def test_clustered_interval_with_partial_agreement():
    """Right answers 2, 1, 3, 0 of 3 samples: p = 0.5, robust variance (0.25 + 0.25 + 2.25 + 2.25) / 144 = 5/144,
    binomial 3/144, design effect 5/3, n_eff 7.2; Wilson(0.5, 7.2): half = 1.96 sqrt(0.25/7.2 + 3.8416/207.36)
    / (1 + 3.8416/7.2) = 0.294924."""
    low, high, design_effect, n_effective = clustered_interval([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])
    assert (design_effect, n_effective) == pytest.approx((5 / 3, 7.2))
    assert (low, high) == pytest.approx((0.5 - 0.294924, 0.5 + 0.294924), abs=1e-6)


def test_clustered_interval_bounds_and_edges():
    # samples that disagree more than chance (each item exactly half right) cannot make n_eff exceed N
    assert clustered_interval([[1, 0], [0, 1]])[2:] == (1.0, 4.0)
    # 0%: nothing says how samples of an item agree, so the conservative n_eff = items (here 2, Wilson(0, 2))
    low, high, design_effect, n_effective = clustered_interval([[0, 0, 0], [0, 0, 0]])
    assert (low, design_effect, n_effective) == (0.0, 3.0, 2.0)
    assert high == pytest.approx(wilson_interval(0, 2)[1]) and high == pytest.approx(0.657628, abs=1e-6)
    assert clustered_interval([]) == (0.0, 0.0, 1.0, 0.0)


def test_dataset_metrics_with_k_samples_uses_items_as_clusters():
    rows = [row(item, ok, "yes") for item, oks in (("a", (1, 1, 1)), ("b", (0, 0, 0)), ("c", (1, 1, 1)),
                                                   ("d", (0, 0, 0))) for ok in oks]
    metrics = dataset_metrics(rows, num_samples=3)
    assert metrics["accuracy"] == 0.5
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == pytest.approx((0.150035, 0.849965), abs=1e-6)
    assert (metrics["accuracy_ci_design_effect"], metrics["accuracy_ci_n_effective"]) == (3.0, 4.0)


def test_no_majority_baseline_for_numeric_answers():
    numeric = [row("a", True, "18", answer="18"), row("b", False, "3", answer="1,250")]
    assert math.isnan(dataset_metrics(numeric, num_samples=1)["majority_baseline"])
    # the rows' own answer type wins over the look of the gold answers
    labelled = [row("a", True, "1", answer="1", answer_type="choice"), row("b", True, "1", answer="1")]
    assert dataset_metrics(labelled, num_samples=1)["majority_baseline"] == 1.0
    assert math.isnan(dataset_metrics([row("a", True, "yes")], num_samples=1, answer_type="numeric")
                      ["majority_baseline"])
