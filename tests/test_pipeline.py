"""What a job leaves when its objective is NaN (through the real entrypoint), and how the sweep summary reads the
job folders a sweep leaves behind."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import optuna
import pytest

from medgrpo.analysis.jobs import summarize_sweep
from tests._run import read_results, run_entrypoint

# Numeric answers have no majority baseline: the metric is NaN, a real NaN objective without any fault injection.
NAN_OBJECTIVE = ["preset=tiny", "train.enabled=false", "eval.limit=1", "data.eval=[gsm8k]",
                 "objective=eval/gsm8k/majority_baseline"]


@pytest.mark.slow
def test_a_nan_objective_fails_a_single_run(tmp_path, model_cache):
    result = run_entrypoint(*NAN_OBJECTIVE, f"hydra.run.dir={tmp_path}", cache=model_cache.parent, timeout=180)
    assert result.returncode == 1
    results = read_results(tmp_path)
    assert results["status"] == "failed"
    assert "objective 'eval/gsm8k/majority_baseline' is nan" in results["error"]


@pytest.mark.slow
@pytest.mark.scale
def test_a_nan_objective_fails_its_optuna_trial_and_the_study_ends_cleanly(tmp_path, model_cache):
    sweep = tmp_path / "study"
    result = run_entrypoint("-m", "hparams_search=smoke_optuna", *NAN_OBJECTIVE, "hydra.sweeper.n_trials=1",
                            f"hydra.sweep.dir={sweep}", cache=model_cache.parent, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    [job] = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    assert read_results(job)["status"] == "failed"
    assert "none of its 1 trials completed" in result.stdout + result.stderr


def write_job(sweep, name, results=None):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- {name.split('_', 1)[1]}\n")
    if results is not None:
        (job / "results.json").write_text(json.dumps({"host": socket.gethostname(), **results}))


def test_the_sweep_summary_sorts_jobs_by_how_they_ended(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    os.kill(gone.pid, signal.SIGKILL)
    gone.wait()
    sweep = tmp_path / "sweep"
    write_job(sweep, "0_lora.rank=4", {"status": "ok", "metrics": {"eval/pubmedqa/accuracy": 0.5}})
    write_job(sweep, "1_lora.rank=0", {"status": "failed", "error": "ConfigError: config key 'lora.rank': bad"})
    write_job(sweep, "2_lora.rank=16")  # started, never wrote results.json
    write_job(sweep, "3_seed=1", {"status": "running", "pid": gone.pid})
    write_job(sweep, "4_seed=2", {"status": "interrupted", "error": "SIGTERM at step 3"})
    write_job(sweep, "10_seed=3", {"status": "running", "pid": os.getpid()})
    write_job(sweep, "5_seed=4", {"status": "failed"})
    (sweep / "ablation").mkdir()  # the table's folder and Optuna's files are not jobs
    (sweep / "optuna.db").write_text("")
    assert summarize_sweep(sweep) == {
        "ok": ["0_lora.rank=4"],
        "failed": ["1_lora.rank=0: ConfigError: config key 'lora.rank': bad", "5_seed=4: no error recorded"],
        "interrupted": ["4_seed=2: SIGTERM at step 3"],
        "killed": [f"3_seed=1: killed: results.json says running, but process {gone.pid} is gone"],
        "running": ["10_seed=3"],
        "missing": ["2_lora.rank=16"],
    }
