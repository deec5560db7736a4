"""The paired bootstrap of accuracy differences (medgrpo.analysis.stats) on cases whose answer is worked out by
hand: the resampled differences take few values, with binomial probabilities."""
import json

import pytest

from medgrpo.analysis.stats import RESAMPLES, item_scores, paired_delta, predictions_file


def test_every_item_flips_from_wrong_to_right():
    result = paired_delta([{str(i): 0.0 for i in range(5)}], [{str(i): 1.0 for i in range(5)}])
    assert (result.delta, result.ci_low, result.ci_high) == pytest.approx((1.0, 1.0, 1.0))
    assert result.p_value == 1 / (RESAMPLES + 1) and result.significant
    assert (result.n_items, result.n_seeds) == (5, (1, 1))


def test_identical_predictions_differ_by_nothing():
    scores = {"a": 1.0, "b": 0.0, "c": 0.5}
    result = paired_delta([scores], [dict(scores)])
    assert (result.delta, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not result.significant


def test_one_changed_item_in_twenty_is_not_significant():
    """Baseline right on items 0-9; the setting also on item 10. Per-item differences: one 1, nineteen 0s, so a
    resampled Δ is X/20 with X ~ Binomial(20, 1/20): P(X=0) = 0.95^20 = 0.3585, P(X<=2) = 0.9245,
    P(X<=3) = 0.9841. 95% CI = [0, 3/20]; p = P(|X/20 - 0.05| >= 0.05) = 1 - P(X=1) = 1 - 0.95^19 = 0.6226."""
    base = {str(i): float(i < 10) for i in range(20)}
    setting = {str(i): float(i < 11) for i in range(20)}
    result = paired_delta([base], [setting])
    assert result.delta == pytest.approx(0.05)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.0, 0.15))
    assert result.p_value == pytest.approx(0.6226, abs=0.015)  # binomial sd of the estimate: 0.005


def test_items_are_paired_and_only_shared_items_count():
    """Two shared items, differences 1 and 0 (the unshared item 'z' is left out): Δ* in {0, 0.5, 1} with
    probabilities 1/4, 1/2, 1/4, so the CI is [0, 1] and p = P(Δ* in {0, 1}) = 1/2."""
    result = paired_delta([{"a": 0.0, "b": 1.0, "z": 0.0}], [{"a": 1.0, "b": 1.0}])
    assert (result.delta, result.ci_low, result.ci_high, result.n_items) == (0.5, 0.0, 1.0, 2)
    assert result.p_value == pytest.approx(0.5, abs=0.02)
    assert paired_delta([{"a": 1.0}], [{"b": 1.0}]) is None
    assert paired_delta([], [{"b": 1.0}]) is None


def test_seeds_are_resampled_within_each_setting():
    """One item; the baseline's two seeds scored 0 and 1, the setting's one seed 1: Δ = 1 - 0.5. Resampling the
    baseline's seeds gives it a mean of 0, 0.5 or 1 (1/4, 1/2, 1/4): Δ* in {1, 0.5, 0}, CI [0, 1], p = 1/2."""
    result = paired_delta([{"x": 0.0}, {"x": 1.0}], [{"x": 1.0}])
    assert (result.delta, result.ci_low, result.ci_high, result.n_seeds) == (0.5, 0.0, 1.0, (2, 1))
    assert result.p_value == pytest.approx(0.5, abs=0.02)


def test_the_same_predictions_always_give_the_same_numbers():
    base, setting = {str(i): float(i % 3 == 0) for i in range(30)}, {str(i): float(i % 2 == 0) for i in range(30)}
    assert paired_delta([base], [setting]) == paired_delta([base], [setting])


def test_item_scores_average_the_samples_of_an_item(tmp_path):
    path = tmp_path / "pubmedqa.jsonl"
    lines = [("a", True), ("a", False), ("a", True), ("b", False), ("b", False), ("b", False)]
    path.write_text("".join(json.dumps({"id": i, "sample": n, "correct": c, "correct_strict": False}) + "\n"
                            for n, (i, c) in enumerate(lines)))
    assert item_scores(path) == pytest.approx({"a": 2 / 3, "b": 0.0})
    assert item_scores(path, "correct_strict") == {"a": 0.0, "b": 0.0}


def test_predictions_file_of_each_stage(tmp_path):
    assert predictions_file(tmp_path, "eval/pubmedqa/accuracy") == tmp_path / "predictions" / "pubmedqa.jsonl"
    assert predictions_file(tmp_path, "eval_base/gsm8k/accuracy_strict") == \
        tmp_path / "predictions_base" / "gsm8k.jsonl"
    assert predictions_file(tmp_path, "eval/pubmedqa/format_rate") is None
    assert predictions_file(tmp_path, "train/reward") is None
