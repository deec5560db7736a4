"""A sweeper killed with SIGKILL in the middle of a trial, then resumed: the killed trial is marked FAIL
(Optuna's heartbeat) and run again with the same parameters (RetryHeartbeatStaleTrialCallback), the resumed
sampler samples new parameters, no trial is lost or duplicated, and the table counts the retry once."""
from __future__ import annotations

import json
import signal
import time

import optuna
import pytest

from tests._run import read_results, run_module
from tests.test_postgres import start_sweeper
from tests.test_sweeps import job_dirs

pytestmark = [pytest.mark.slow, pytest.mark.scale]
COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
HEARTBEAT = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2", "hydra.sweeper.max_retry=1"]


def running_job(sweep, number):
    """Job dir `number` once its results.json says running, else None."""
    for job in job_dirs(sweep) if sweep.is_dir() else []:
        if job.name.split("_")[0] == str(number) and (job / "results.json").is_file():
            if json.loads((job / "results.json").read_text())["status"] == "running":
                return job
    return None


def test_a_killed_sweeper_leaves_a_failed_trial_that_the_resumed_study_retries(tmp_path, model_cache):
    sweep = tmp_path / "study"
    sweeper = start_sweeper(sweep, model_cache.parent, "hydra.sweeper.n_trials=3", *HEARTBEAT)
    try:
        deadline = time.time() + 600
        while running_job(sweep, 1) is None:  # trial 0 done, trial 1 training: kill the sweeper and its job
            assert sweeper.poll() is None and time.time() < deadline, "trial 1 never started"
            time.sleep(0.2)
    finally:
        sweeper.send_signal(signal.SIGKILL)  # a real SIGKILL (Popen skips it if the sweeper already exited)
        output, _ = sweeper.communicate()
    assert sweeper.returncode == -signal.SIGKILL, output[-4000:]
    time.sleep(3)  # the killed trial's last heartbeat is now older than the grace period

    resumed = start_sweeper(sweep, model_cache.parent, "hydra.sweeper.n_trials=2", *HEARTBEAT)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-4000:]

    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    assert [t.state for t in trials] == [COMPLETE, FAIL, COMPLETE, COMPLETE]  # none lost, none left RUNNING
    retry = trials[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == trials[1].params
    rates = [t.params["grpo.learning_rate"] for t in trials]
    assert len({rates[0], rates[1], rates[3]}) == 3  # the resumed sampler did not replay trials 0 and 1
    assert read_results(job_dirs(sweep)[1])["status"] == "running"  # what the kill left behind

    table = run_module("analysis.ablation_table", "--sweep", str(sweep), "--metrics", "train/reward")
    assert table.returncode == 0, table.stderr
    assert "1 repeated run(s) of a setting with the same seed not counted as seeds" in table.stdout
    rows = [line for line in table.stdout.splitlines() if line.startswith("| ") and "grpo.learning_rate=" in line]
    assert len(rows) == 3 and not any("killed" in row for row in rows), table.stdout
