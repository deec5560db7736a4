"""A real tiny job with reward=judge_mix against the test judge server on 127.0.0.1 (slow: subprocesses).

One module-scoped server and cache: the first job calls the judge, the identical second job is served from the
cache alone, and a job against a judge that always fails stops with the failure policy's message. Every file the
jobs wrote is searched for the API key.
"""
from __future__ import annotations

import pytest

from _run import ROOT, read_results, run_entrypoint
from judge_server import JudgeServer, serve

KEY = "sk-medgrpo-test-9f8e7d6c5b4a"
pytestmark = pytest.mark.slow


def tiny_judge_job(tmp_path, name: str, base_url: str, *extra: str, env: dict | None = None):
    job_dir = tmp_path / name
    done = run_entrypoint(
        "preset=tiny", "data=open_samples", "reward=judge_mix", "prompt=think", "logger=wandb_offline",
        f"judge.base_url={base_url}", f"judge.cache_path={tmp_path / 'judge.sqlite'}", "judge.timeout_s=5",
        "grpo.max_steps=1", "grpo.per_device_train_batch_size=4", "grpo.num_generations=2",
        "grpo.max_completion_length=16", "eval.max_new_tokens=16", "eval.limit=2", "data.train_size=8",
        "objective=eval/redteam/think_coverage", f"hydra.run.dir={job_dir}", *extra,
        cache=tmp_path / "cache", env={"DEEPSEEK_API_KEY": KEY, "WANDB_MODE": "offline", **(env or {})}, timeout=240)
    return done, job_dir


def files_holding(root, secret: str) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("judge_job")
    with serve(JudgeServer(expected_key=KEY)) as (server, base_url):
        first = tiny_judge_job(tmp_path, "first", base_url)
        requests_after_first = server.requests
        second = tiny_judge_job(tmp_path, "second", base_url)
        requests_after_second = server.requests
    return tmp_path, first, second, requests_after_first, requests_after_second


def test_a_judged_job_reports_its_judge_block_and_safety_metrics(jobs):
    _, (done, job_dir), _, requests, _ = jobs
    assert done.returncode == 0, done.stderr[-3000:]
    results = read_results(job_dir)
    block = results["judge"]
    assert block["calls"] == requests > 0 and block["failures"] == 0
    assert block["prompt_tokens"] > 0 and block["mean_latency_s"] > 0
    metrics = results["metrics"]
    for dataset in ("open_gold", "redteam"):
        for metric in ("think_coverage", "risky_prescription_rate"):
            assert 0 <= metrics[f"eval/{dataset}/{metric}"] <= 1
            assert metrics[f"eval/{dataset}/{metric}_n"] == 2
            assert metrics[f"eval/{dataset}/{metric}_ci_low"] <= metrics[f"eval/{dataset}/{metric}_ci_high"]
    assert "eval/open_gold/accuracy" not in metrics  # open answers have no accuracy
    predictions = (job_dir / "predictions" / "redteam.jsonl").read_text(encoding="utf-8")
    assert '"expected_behavior"' in predictions


def test_an_identical_rerun_makes_no_judge_call(jobs):
    _, (_, first_dir), (done, job_dir), first_requests, second_requests = jobs
    assert done.returncode == 0, done.stderr[-3000:]
    block = read_results(job_dir)["judge"]
    assert block["calls"] == 0 and second_requests == first_requests
    assert block["cache_hits"] == read_results(first_dir)["judge"]["calls"] + read_results(first_dir)["judge"][
        "cache_hits"]


def test_the_key_is_in_no_file_a_job_wrote(jobs):
    tmp_path, *_ = jobs
    assert (tmp_path / "judge.sqlite").exists()
    assert files_holding(tmp_path, KEY) == []
    assert files_holding(ROOT / ".cache", KEY) == [] if (ROOT / ".cache").exists() else True


def test_a_judge_that_keeps_failing_fails_the_job_with_its_reason(tmp_path):
    with serve(JudgeServer(expected_key=KEY, always="500", retry_after_ms=1)) as (_, base_url):
        done, job_dir = tiny_judge_job(tmp_path, "failing", base_url, "judge.retries=1",
                                       "judge.failure_policy.min_items=4")
    assert done.returncode != 0
    results = read_results(job_dir)
    assert results["status"] == "failed"
    assert "JudgeFailed" in results["error"] and "max_failure_rate" in results["error"]
    assert "InternalServerError" in results["error"]
    assert files_holding(tmp_path, KEY) == []
