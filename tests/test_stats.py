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


def test_the_interval_is_95_percent():
    """8 items the baseline gets wrong, the setting right on 4: resampled Δ = X/8 with X ~ Binomial(8, 1/2), whose
    CDF is 1, 9, 37, ..., 219, 247, 255 (/256) at X = 0, 1, 2, ..., 5, 6, 7. Percentile 2.5: F(0) = 0.004 < 0.025
    <= F(1) = 0.035, so 1/8; percentile 97.5: F(6) = 0.965 < 0.975 <= F(7) = 0.996, so 7/8. (A 90% interval
    would be [2/8, 6/8]: F(1) = 0.035 < 0.05 <= F(2) = 0.145.) p = P(X in {0, 8}) = 2/256 = 0.0078."""
    result = paired_delta([{str(i): 0.0 for i in range(8)}], [{str(i): float(i < 4) for i in range(8)}])
    assert (result.delta, result.ci_low, result.ci_high) == (0.5, 0.125, 0.875)
    assert result.p_value == pytest.approx(2 / 256, abs=0.003) and result.significant  # binomial sd: 0.0009


def test_the_resample_count_is_exact_when_it_is_not_a_multiple_of_the_block():
    """The 1-in-20 case with 2,500 resamples (blocks of 1,000, 1,000 and 500): p = (1 + count) / 2,501 where count
    estimates 1 - 0.95^19 = 0.6226 of 2,500; drawing whole blocks (3,000) would push p to about 0.75."""
    base = {str(i): float(i < 10) for i in range(20)}
    result = paired_delta([base], [{str(i): float(i < 11) for i in range(20)}], resamples=2_500)
    assert result.p_value == pytest.approx(0.6226, abs=0.03)  # binomial sd: 0.0097


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
