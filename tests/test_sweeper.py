"""The Optuna sweeper (hydra/sweeper=medgrpo_optuna) in-process and fast: real Hydra, the real sweeper and basic
launcher, a real SQLite study; only the job is a small function returning the objective, which is the input
under test here (slow tests in test_sweeps.py run the same paths through the entrypoint on the tiny model)."""
from __future__ import annotations

import logging
import sys

import hydra
import optuna
import pytest
from omegaconf import OmegaConf

import medgrpo.config  # noqa: F401  (registers the resolvers the Hydra config uses)
from medgrpo.analysis.jobs import job_dirs
from tests._run import ROOT

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
PLANTED_PASSWORD = "pl4nted-Pw"


def run_study(tmp_path, monkeypatch, job, *overrides: str):
    """`python src/run.py -m hparams_search=tiny_optuna <overrides>` with `job(cfg)` as the task function.
    Hydra leaves logging alone (job_logging=none), so caplog sees the sweeper's lines."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # raise the sweeper's error instead of printing it and exiting
    monkeypatch.chdir(tmp_path)

    @hydra.main(config_path=str(ROOT / "conf"), config_name="config", version_base="1.3")
    def main(cfg):
        return job(cfg)

    monkeypatch.setattr(sys, "argv", ["run.py", "-m", "hparams_search=tiny_optuna", "hydra.sweep.dir=study",
                                      "hydra/job_logging=none", "hydra/hydra_logging=none", *overrides])
    main()
    return tmp_path / "study"


def load(sweep, name="tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'optuna.db'}")


def by_rank(cfg) -> float:
    return float(cfg.lora.rank)


def test_storage_defaults_to_sqlite_in_the_sweep_dir(tmp_path, monkeypatch):
    sweep = run_study(tmp_path, monkeypatch, by_rank, "hydra.sweeper.n_trials=2")
    trials = load(sweep).trials
    assert [t.state for t in trials] == [COMPLETE, COMPLETE]
    assert [t.value for t in trials] == [float(t.params["lora.rank"]) for t in trials]


def test_a_relative_sqlite_path_is_made_absolute_and_its_folder_created(tmp_path, monkeypatch):
    run_study(tmp_path, monkeypatch, by_rank, "hydra.sweeper.n_trials=1",
              "hydra.sweeper.storage=sqlite:///studies/new/tiny.db")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'studies/new/tiny.db'}")
    assert [t.state for t in study.trials] == [COMPLETE]


def test_an_unreachable_storage_fails_before_any_trial_and_masks_the_password(tmp_path, monkeypatch, caplog):
    url = f"postgresql+psycopg2://medgrpo:{PLANTED_PASSWORD}@127.0.0.1:1/optuna"  # port 1: nothing listens
    monkeypatch.setenv("MEDGRPO_OPTUNA_STORAGE", url)
    ran = []
    with pytest.raises(ValueError) as error:
        run_study(tmp_path, monkeypatch, ran.append, "hydra.sweeper.storage=${oc.env:MEDGRPO_OPTUNA_STORAGE}")
    message = str(error.value)
    assert message.startswith("hydra.sweeper.storage: cannot open "
                              "'postgresql+psycopg2://medgrpo:***@127.0.0.1:1/optuna': ")
    assert "Connection refused" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # the driver's error quotes the URL
    assert PLANTED_PASSWORD not in caplog.text and not ran
    assert not (tmp_path / "study").exists() or not job_dirs(tmp_path / "study")


def test_the_upstream_storage_log_line_is_masked(caplog):
    from hydra_plugins.hydra_optuna_sweeper._impl import log as upstream_log

    import hydra_plugins.medgrpo_optuna.medgrpo_optuna_sweeper  # noqa: F401  (attaches the filter)

    with caplog.at_level(logging.INFO):
        upstream_log.info(f"Storage: postgresql://medgrpo:{PLANTED_PASSWORD}@db:5432/optuna")
    assert caplog.messages == ["Storage: postgresql://medgrpo:***@db:5432/optuna"]


@pytest.mark.parametrize("overrides, metrics, directions", [
    (["hydra.sweeper.direction=[maximize,minimize]"], 1, 2),
    (["objective=[train/reward,eval/pubmedqa/accuracy]"], 2, 1),
])
def test_one_direction_per_objective_metric_is_checked_before_any_trial(overrides, metrics, directions,
                                                                         tmp_path, monkeypatch):
    ran = []
    with pytest.raises(ValueError, match=rf"has {metrics} metric\(s\) but hydra.sweeper.direction has {directions}"):
        run_study(tmp_path, monkeypatch, ran.append, *overrides)
    assert not ran


def test_a_study_where_every_trial_failed_ends_with_a_message(tmp_path, monkeypatch, caplog):
    failed_job = lambda cfg: None  # noqa: E731  (what run_job returns for a failed job inside a sweep)
    with caplog.at_level(logging.INFO):
        sweep = run_study(tmp_path, monkeypatch, failed_job, "hydra.sweeper.n_trials=2")
    assert [t.state for t in load(sweep).trials] == [FAIL, FAIL]
    assert "Study 'tiny': none of its 2 trials completed" in caplog.text
    assert len(job_dirs(sweep)) == 2


def test_a_resumed_study_numbers_its_jobs_after_the_stored_trials(tmp_path, monkeypatch, caplog):
    for _ in range(2):
        with caplog.at_level(logging.INFO):
            sweep = run_study(tmp_path, monkeypatch, by_rank, "hydra.sweeper.n_trials=2")
    assert "Resuming study 'tiny' with 2 trials already stored" in caplog.text
    trials = load(sweep).trials
    jobs = job_dirs(sweep)
    assert [int(job.name.split("_")[0]) for job in jobs] == [t.number for t in trials] == [0, 1, 2, 3]
    for job, trial in zip(jobs, trials):  # job dir N ran trial N's parameters
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert f"lora.rank={trial.params['lora.rank']}" in overrides
