"""The Optuna sweeper (hydra/sweeper=medgrpo_optuna) in-process and fast: real Hydra, the real sweeper and basic
launcher, a real SQLite study; only the job is a small function returning the objective, which is the input
under test here (slow tests in test_sweeps.py run the same paths through the entrypoint on the tiny model)."""
from __future__ import annotations

import logging
import sys
import time

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
    """`python src/run.py -m hparams_search=smoke_optuna <overrides>` with `job(cfg)` as the task function.
    Hydra leaves logging alone (job_logging=none), so caplog sees the sweeper's lines."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # raise the sweeper's error instead of printing it and exiting
    monkeypatch.chdir(tmp_path)

    @hydra.main(config_path=str(ROOT / "conf"), config_name="config", version_base="1.3")
    def main(cfg):
        return job(cfg)

    monkeypatch.setattr(sys, "argv", ["run.py", "-m", "hparams_search=smoke_optuna", "hydra.sweep.dir=study",
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
    # with hydra.job.chdir=true each job runs inside its own folder, where a relative path would point elsewhere
    run_study(tmp_path, monkeypatch, by_rank, "hydra.sweeper.n_trials=2", "hydra.job.chdir=true",
              "hydra.sweeper.storage=sqlite:///studies/new/tiny.db")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'studies/new/tiny.db'}")
    assert [t.state for t in study.trials] == [COMPLETE, COMPLETE]


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


def learning_rate(cfg) -> float:
    return float(cfg.grpo.learning_rate)


def test_a_resumed_study_never_replays_the_seeded_samplers_first_trials(tmp_path, monkeypatch):
    for _ in range(2):  # the same command twice: the sampler is built again with the same seed
        sweep = run_study(tmp_path, monkeypatch, learning_rate, "hydra.sweeper.n_trials=3")
    rates = [t.params["grpo.learning_rate"] for t in load(sweep).trials]
    assert len(rates) == 6 and len(set(rates)) == 6  # a continuous parameter: a repeat means a replayed stream


def test_trial_parameters_follow_the_seed_and_trial_number(tmp_path, monkeypatch):
    for name in "abc":
        (tmp_path / name).mkdir()
    first = run_study(tmp_path / "a", monkeypatch, learning_rate, "hydra.sweeper.n_trials=2")
    again = run_study(tmp_path / "b", monkeypatch, learning_rate, "hydra.sweeper.n_trials=2")
    other = run_study(tmp_path / "c", monkeypatch, learning_rate, "hydra.sweeper.n_trials=2", "seed=7")
    params = [[t.params for t in load(sweep).trials] for sweep in (first, again, other)]
    assert params[0] == params[1] != params[2]  # reproducible from the seed, and the seed matters


def by_rank_and_seed(cfg) -> float:
    return float(cfg.lora.rank + cfg.seed)


def test_each_trial_is_the_mean_over_its_seeds_each_its_own_job(tmp_path, monkeypatch):
    sweep = run_study(tmp_path, monkeypatch, by_rank_and_seed, "hydra.sweeper.n_trials=2",
                      "hydra.sweeper.seeds=[1,2,3]")
    trials = load(sweep).trials
    assert [t.state for t in trials] == [COMPLETE, COMPLETE]
    for trial in trials:
        rank = trial.params["lora.rank"]
        assert "seed" not in trial.params  # the seed is not a hyperparameter
        assert trial.value == rank + 2.0
        assert trial.user_attrs["seed_values"] == [rank + 1.0, rank + 2.0, rank + 3.0]
        assert trial.user_attrs["seed_std"] == [1.0]
    jobs = job_dirs(sweep)
    assert [int(job.name.split("_")[0]) for job in jobs] == list(range(6))  # trial t, seed i: job 3t + i
    for number, job in enumerate(jobs):
        overrides = list(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        trial = trials[number // 3]
        assert f"seed={number % 3 + 1}" in overrides and f"lora.rank={trial.params['lora.rank']}" in overrides


def test_a_trial_with_a_failed_seed_fails(tmp_path, monkeypatch):
    def seed_two_fails(cfg):
        return None if cfg.seed == 2 else float(cfg.seed)

    sweep = run_study(tmp_path, monkeypatch, seed_two_fails, "hydra.sweeper.n_trials=1", "hydra.sweeper.seeds=[1,2]")
    (trial,) = load(sweep).trials
    assert trial.state == FAIL and trial.user_attrs["seed_values"] == [1.0, None]


@pytest.mark.parametrize("sweep_override", ["seed=1,2,3", "seed=range(1,4)"])
def test_sweeping_the_seed_as_a_parameter_is_refused_before_any_trial(sweep_override, tmp_path, monkeypatch):
    ran = []
    with pytest.raises(ValueError, match=r"hydra.sweeper.seeds=\[1,2,3\]"):
        run_study(tmp_path, monkeypatch, ran.append, sweep_override)
    assert not ran


def test_a_journal_file_stores_the_study_without_a_database(tmp_path, monkeypatch):
    run_study(tmp_path, monkeypatch, by_rank, "hydra.sweeper.n_trials=2", "hydra.sweeper.storage=shared/tiny.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "shared" / "tiny.journal")))
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert [t.state for t in trials] == [COMPLETE, COMPLETE]


def test_a_trial_left_running_by_a_dead_sweeper_fails_and_is_retried_on_resume(tmp_path, monkeypatch):
    """The dead sweeper is simulated here (a trial asked, one heartbeat, then silence); test_scale.py kills a
    real one with SIGKILL."""
    url = f"sqlite:///{tmp_path / 'study' / 'optuna.db'}"
    (tmp_path / "study").mkdir()
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    orphan = study.ask({"lora.rank": optuna.distributions.CategoricalDistribution([4, 8])})
    storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)  # past the grace period
    run_study(tmp_path, monkeypatch, by_rank, "hydra.sweeper.n_trials=1", "hydra.sweeper.heartbeat_interval=1",
              "hydra.sweeper.grace_period=1", "hydra.sweeper.max_retry=1")
    trials = load(tmp_path / "study").trials
    assert [t.state for t in trials] == [FAIL, COMPLETE]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == orphan.number
    assert retry.params["lora.rank"] == orphan.params["lora.rank"]  # the same parameters, run again
