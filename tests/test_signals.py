"""Real signals on a real job: SIGTERM during training saves a checkpoint and writes `interrupted` with the last
step (exit 143); a second job is refused the folder while the first lives; the same command then resumes from
that checkpoint, and SIGINT before training writes `interrupted` too (exit 130)."""
from __future__ import annotations

import os
import signal

import pytest

from _run import read_results, run_entrypoint, start_entrypoint, training_started, wait_for
from medgrpo.analysis.jobs import load_job
from medgrpo.resume import torn_reason

LONG_JOB = ("preset=tiny", "grpo.max_steps=500", "eval.after_training=false", "objective=train/reward")
QUIET = {"WANDB_MODE": "disabled"}


def _running_as(job_dir, pid: int) -> bool:
    try:
        results = read_results(job_dir)
    except (OSError, ValueError):
        return False
    return results["status"] == "running" and results["pid"] == pid


@pytest.mark.slow
def test_sigterm_sigint_and_the_folder_lock(tmp_path, model_cache):
    cache, job_dir = model_cache.parent, tmp_path / "job"
    job = start_entrypoint(*LONG_JOB, f"hydra.run.dir={job_dir}", cache=cache, env=QUIET)
    wait_for(lambda: training_started(job_dir), job, "training")

    second = run_entrypoint(*LONG_JOB, f"hydra.run.dir={job_dir}", cache=cache, env=QUIET)
    assert second.returncode == 2
    assert f"job folder {job_dir} is in use by another running job (pid {job.pid}" in second.stderr + second.stdout
    assert _running_as(job_dir, job.pid)  # the live job's results.json is untouched

    os.kill(job.pid, signal.SIGTERM)
    assert job.wait(timeout=300) == 128 + signal.SIGTERM, job.stdout.read()[-3000:]
    results = read_results(job_dir)
    assert results["status"] == "interrupted" and results["error"].startswith("interrupted by SIGTERM at step")
    step = results["last_step"]
    assert step >= 1 and results["checkpoint"].endswith(f"checkpoint-{step}")
    assert torn_reason(job_dir / "checkpoints" / f"checkpoint-{step}") is None
    assert load_job(job_dir).status == "interrupted"

    again = start_entrypoint(*LONG_JOB, f"hydra.run.dir={job_dir}", cache=cache, env=QUIET)
    wait_for(lambda: _running_as(job_dir, again.pid), again, "the second run's start")
    os.kill(again.pid, signal.SIGINT)
    assert again.wait(timeout=300) == 128 + signal.SIGINT, again.stdout.read()[-3000:]
    results = read_results(job_dir)
    assert results["status"] == "interrupted" and results["error"].startswith("interrupted by SIGINT")
    assert results["resumed_from"] == step  # it was about to continue from the SIGTERM checkpoint
