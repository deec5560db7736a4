"""Sweeps through the real entrypoint: a 2x2 grid with W&B offline runs in one group and its ablation table, an
Optuna study that resumes and records failed trials, and W&B being unreachable."""
from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest

from tests._run import ROOT, main_table_rows, read_results, run_entrypoint

pytestmark = [pytest.mark.slow, pytest.mark.scale]
FAST = ["grpo.max_steps=2", "eval.limit=4"]


def job_dirs(sweep):
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0]))


def test_grid_sweep_and_its_ablation_table(tmp_path, model_cache):
    sweep = tmp_path / "grid"
    result = run_entrypoint("-m", "preset=tiny", "lora.rank=4,8", "reward=recipe,weighted", *FAST,
                            f"hydra.sweep.dir={sweep}", cache=model_cache.parent, timeout=600,
                            env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    runs = [read_results(job) for job in jobs]
    assert all(r["status"] == "ok" for r in runs)
    assert {tuple(sorted(o for o in r["overrides"] if o.split("=")[0] in ("lora.rank", "reward"))) for r in runs} \
        == {("lora.rank=4", "reward=recipe"), ("lora.rank=4", "reward=weighted"),
            ("lora.rank=8", "reward=recipe"), ("lora.rank=8", "reward=weighted")}
    # one W&B run per job, each finished and in the sweep's group, named by its overrides
    assert {r["wandb"]["group"] for r in runs} == {sweep.name}
    assert len({r["wandb"]["id"] for r in runs}) == 4
    for job, r in zip(jobs, runs):
        assert r["wandb"]["mode"] == "offline" and "lora.rank=" in r["wandb"]["name"]
        assert list((job / "wandb").glob(f"offline-run-*-{r['wandb']['id']}"))

    table = subprocess.run([sys.executable, str(ROOT / "analysis" / "ablation_table.py"), "--sweep", str(sweep)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    rows = main_table_rows(table.stdout)
    assert len(rows) == 4 and sum("lora.rank=8, reward=weighted" in row for row in rows) == 1, table.stdout
    written = {p.suffix for p in (sweep / "ablation").iterdir()}
    assert {".md", ".csv", ".png"} <= written


def optuna_sweep(sweep, cache, *extra):
    return run_entrypoint("-m", "hparams_search=smoke_optuna", *FAST, f"hydra.sweep.dir={sweep}", *extra,
                          cache=cache, timeout=600)


def test_optuna_study_resumes_and_keeps_job_dirs_apart(tmp_path, model_cache):
    sweep = tmp_path / "study"
    for expected in (3, 6):
        result = optuna_sweep(sweep, model_cache.parent)
        assert result.returncode == 0, result.stderr[-4000:]
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{sweep / 'optuna.db'}")
        states = [t.state for t in study.trials]
        assert states.count(optuna.trial.TrialState.COMPLETE) == expected
    assert [int(p.name.split("_")[0]) for p in job_dirs(sweep)] == list(range(6))


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, model_cache):
    sweep = tmp_path / "study"
    result = optuna_sweep(sweep, model_cache.parent, 'hydra.sweeper.params={lora.rank:"choice(0,8)"}',
                          "hydra.sweeper.n_trials=4")
    assert result.returncode == 0, result.stderr[-4000:]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{sweep / 'optuna.db'}")
    by_rank = {(t.params["lora.rank"], t.state) for t in study.trials}
    assert (0, optuna.trial.TrialState.FAIL) in by_rank and (8, optuna.trial.TrialState.COMPLETE) in by_rank
    assert not {s for r, s in by_rank if r == 0} - {optuna.trial.TrialState.FAIL}
    failed = [read_results(j) for j in job_dirs(sweep) if "lora.rank=0" in j.name]
    assert failed and all(r["status"] == "failed" and "'lora.rank'" in r["error"] for r in failed)


def test_an_unknown_objective_fails_before_any_trial(tmp_path, model_cache):
    sweep = tmp_path / "study"
    result = optuna_sweep(sweep, model_cache.parent, "objective=accuracy")
    assert result.returncode != 0 and "objective" in result.stderr
    assert not job_dirs(sweep) if sweep.exists() else True


def test_unreachable_wandb_falls_back_to_offline_and_leaks_no_key(tmp_path, model_cache):
    fake_key = "f" * 40
    env = {"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": fake_key, "WANDB_INIT_TIMEOUT": "5"}
    base_env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "run.py"), "preset=tiny", "logger=wandb", *FAST,
         f"hydra.run.dir={tmp_path}", f"paths.cache_dir={model_cache.parent}"],
        cwd=ROOT, env={**base_env, "HF_HUB_OFFLINE": "1", **env}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    results = read_results(tmp_path)
    assert results["status"] == "ok" and results["wandb"]["mode"] == "offline"
    assert "W&B unreachable" in result.stderr + result.stdout
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert fake_key.encode() not in path.read_bytes(), f"API key written to {path}"
