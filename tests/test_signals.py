"""Real signals on a real job: SIGTERM during training saves a checkpoint and writes `interrupted` with the last
step (exit 143); a second job is refused the folder while the first lives; the same command then resumes from
that checkpoint, and SIGINT before training writes `interrupted` too (exit 130)."""
from __future__ import annotations

import os
import signal

import pytest

from transformers import TrainerControl, TrainerState, TrainingArguments

from _run import read_results, run_entrypoint, start_entrypoint, training_started, wait_for
from medgrpo.analysis.jobs import load_job
from medgrpo.resume import StopAtStepEnd, torn_reason
from medgrpo.signals import JobInterrupted, defer_signals, raise_if_stopped, stop_signals

LONG_JOB = ("preset=tiny", "grpo.max_steps=500", "eval.after_training=false", "objective=train/reward")
QUIET = {"WANDB_MODE": "disabled"}


def test_outside_training_a_signal_interrupts_at_once():
    with pytest.raises(JobInterrupted, match="interrupted by SIGTERM$") as stopped:
        with stop_signals():
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the next statement
    assert stopped.value.signum == signal.SIGTERM and stopped.value.step is None
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the previous handler is back


def test_inside_training_a_signal_stops_at_the_step_end_with_a_checkpoint(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    state, control, callback = TrainerState(), TrainerControl(), StopAtStepEnd()
    with pytest.raises(JobInterrupted, match="interrupted by SIGINT at step 3, checkpoint .*checkpoint-3 saved"):
        with stop_signals():
            callback.on_init_end(args, state, control)  # the trainer exists: signals wait for the step end
            os.kill(os.getpid(), signal.SIGINT)
            state.global_step = 3
            callback.on_step_end(args, state, control)
            assert control.should_save and control.should_training_stop
            callback.on_save(args, state, control)
            callback.on_train_end(args, state, control)
            raise_if_stopped()


def test_a_signal_while_results_are_written_exits_after_them():
    with pytest.raises(SystemExit) as exited:
        with stop_signals():
            defer_signals()
            os.kill(os.getpid(), signal.SIGTERM)  # recorded only: the job finishes writing, then exits
    assert exited.value.code == 128 + signal.SIGTERM


def _running_as(job_dir, pid: int) -> bool:
    try:
        results = read_results(job_dir)
    except (OSError, ValueError):
        return False
    return results["status"] == "running" and results["pid"] == pid


@pytest.mark.slow
@pytest.mark.scale  # a second process resumes what the killed one left: make test-scale
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
