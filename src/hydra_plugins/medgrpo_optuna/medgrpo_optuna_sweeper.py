"""hydra/sweeper=medgrpo_optuna: hydra-optuna-sweeper, made safe for long, shared and interrupted studies.

Storage (hydra.sweeper.storage):
- null: SQLite in the sweep dir; `sqlite:///...` (made absolute, its folder created); any SQLAlchemy URL such as
  `postgresql+psycopg2://user@host/db` for several machines sharing one study. These open as Optuna's RDBStorage
  with a heartbeat (heartbeat_interval, grace_period): a trial whose sweeper died is marked FAIL by the next
  sweeper that runs a batch of the study, and max_retry > 0 queues it again (RetryHeartbeatStaleTrialCallback).
- a file path without `://` (e.g. /shared/studies/tiny.journal): Optuna's JournalStorage on a JournalFileBackend,
  for a shared filesystem with no database server (the path convention of `optuna --storage` and
  optuna-dashboard). Journal storage has no heartbeat in Optuna: a killed trial stays RUNNING there.
- a `_target_` node: any Optuna storage object, built by Hydra and used as it is.
A storage URL's password is masked in every message and log line; pass it from the environment:
hydra.sweeper.storage='${oc.env:MEDGRPO_OPTUNA_STORAGE}'.

What this subclass changes in the upstream sweeper (1.3.0), and why:
- Job dir N runs trial N (trial * len(seeds) + i with seeds): trial numbers are unique in the study, so sweepers
  sharing a study, and a resumed study, never reuse a job dir.
- The sampler is seeded per trial from (sampler seed, trial number): a resumed study or a second process would
  otherwise restart the seeded random stream and re-sample the first trials' parameters.
- hydra.sweeper.seeds=[1,2,3] runs each trial once per seed (each its own job); the trial's value is their mean,
  and the per-seed values and their spread are user attributes of the trial. `seed=1,2,3` on the command line
  would make the seed a hyperparameter the sampler tunes, so it is refused.
- The storage and the objective are checked before any trial runs; an all-failed study ends with a message
  instead of a traceback. Failed trials (an exception, OOM or a NaN objective: medgrpo jobs return None then)
  are recorded as FAIL by the upstream code and the study goes on.

No `from __future__ import annotations` here: Hydra executes plugin modules outside sys.modules, where
dataclasses cannot resolve string annotations.
"""
import logging
import math
import socket
import statistics
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import optuna
import sqlalchemy
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from medgrpo.config import check_objective, objective_keys
from medgrpo.secrets import mask_url_passwords_in_logs, redact_url_passwords
from optuna.distributions import _convert_old_distribution_to_new_distribution
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages._heartbeat import get_heartbeat_thread  # what Study.optimize runs around each trial
from optuna.storages.journal import JournalFileBackend
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)
mask_url_passwords_in_logs(log, logging.getLogger(OptunaSweeperImpl.__module__))  # upstream logs "Storage: <url>"


def storage_url(storage: Optional[str], sweep_dir: str) -> str:
    """The study's storage: <sweep dir>/optuna.db when none is given; SQLite and journal paths made absolute,
    their folder created."""
    prefix = "sqlite:///"
    if not storage:
        storage = prefix + str(Path(sweep_dir) / "optuna.db")
    if "://" in storage and not storage.startswith(prefix):
        return storage
    path = Path(storage.removeprefix(prefix)).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)  # the sweep dir does not exist before the first job
    return (prefix if storage.startswith(prefix) else "") + str(path)


def open_storage(storage: Any, sweep_dir: str, heartbeat_interval: Optional[int], grace_period: Optional[int],
                 max_retry: int) -> optuna.storages.BaseStorage:
    """The Optuna storage object for hydra.sweeper.storage (see the module docstring)."""
    if storage is not None and not isinstance(storage, str):
        return storage  # built by Hydra from a _target_ node
    url = storage_url(storage, sweep_dir)
    if "://" not in url:
        return JournalStorage(JournalFileBackend(url))
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if max_retry > 0 else None
    for attempt in range(3):
        try:
            return RDBStorage(url, heartbeat_interval=heartbeat_interval or None, grace_period=grace_period,
                              heartbeat_stale_trial_callback=retry)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Sweepers started together on an empty PostgreSQL database race to create Optuna's tables and all
            # but one fail (duplicate key or table); by the next attempt the tables exist.
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def seed_mean(values: List[Any]) -> Any:
    """The trial's value from its seeds' values (floats, or lists for several objectives); None if any failed."""
    rows = [[v] if isinstance(v, (int, float)) else v for v in values]
    if any(row is None or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in row) for row in rows):
        return None
    means = [statistics.fmean(column) for column in zip(*rows)]
    return means[0] if isinstance(values[0], (int, float)) else means


class _TrialLauncher:
    """Wraps the configured launcher: runs a batch of asked trials as jobs numbered after the trials, one job per
    seed when seeds are given, with each trial's heartbeat recorded while its jobs run."""

    def __init__(self, launcher: Any, seeds: Sequence[int]) -> None:
        self.launcher = launcher
        self.seeds = list(seeds)
        self.trials: List[optuna.Trial] = []  # the batch being launched, set by _configure_trials

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[JobReturn]:
        per_trial = len(self.seeds) or 1
        jobs = [(trial.number * per_trial + i, [*overrides, f"seed={seed}"] if self.seeds else list(overrides))
                for trial, overrides in zip(self.trials, job_overrides)
                for i, seed in enumerate(self.seeds or [None])]
        study = self.trials[0].study
        returns: List[JobReturn] = []
        with ExitStack() as heartbeats:
            for trial in self.trials:
                heartbeats.enter_context(get_heartbeat_thread(trial._trial_id, trial.storage))
            # The launcher numbers jobs consecutively: one call per run of consecutive job numbers (another
            # process sharing the study may have taken the numbers in between).
            start = 0
            for end in range(1, len(jobs) + 1):
                if end == len(jobs) or jobs[end][0] != jobs[end - 1][0] + 1:
                    returns += self.launcher.launch([o for _, o in jobs[start:end]], initial_job_idx=jobs[start][0])
                    start = end
        fail_stale_trials(study)  # trials of dead sweepers: FAIL (and re-queued when max_retry > 0)
        for i, trial in enumerate(self.trials):  # where the table finds each trial's results.json
            trial.set_user_attr("job_dirs", [str(job.hydra_cfg.hydra.runtime.output_dir)
                                             for job in returns[i * per_trial:(i + 1) * per_trial]])
            trial.set_user_attr("host", socket.gethostname())
        if not self.seeds:
            return returns
        return [self._seeds_return(trial, returns[i * per_trial:(i + 1) * per_trial])
                for i, trial in enumerate(self.trials)]

    def _seeds_return(self, trial: optuna.Trial, returns: List[JobReturn]) -> JobReturn:
        values = []
        for job in returns:
            try:
                values.append(job.return_value)
            except Exception:  # noqa: BLE001 - the job raised: that seed failed, and with it the trial
                values.append(None)
        mean = seed_mean(values)
        trial.set_user_attr("seeds", self.seeds)
        trial.set_user_attr("seed_values", values)
        if mean is not None and len(values) > 1:
            rows = [[v] if isinstance(v, (int, float)) else v for v in values]
            trial.set_user_attr("seed_std", [statistics.stdev(column) for column in zip(*rows)])
        if mean is None:
            log.warning("Trial %d: a seed failed (values %s); the trial is FAIL", trial.number, values)
        return JobReturn(overrides=returns[0].overrides, status=JobStatus.COMPLETED, _return_value=mean)


class _ResilientImpl(OptunaSweeperImpl):
    def __init__(self, *args: Any, seeds: Optional[List[int]], heartbeat_interval: Optional[int],
                 grace_period: Optional[int], max_retry: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seeds = list(seeds or [])
        self.heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                          "max_retry": max_retry}

    def setup(self, **kwargs: Any) -> None:
        super().setup(**kwargs)
        self.launcher = _TrialLauncher(self.launcher, self.seeds)

    def sweep(self, arguments: List[str]) -> None:
        self._refuse_seed_sweeps(arguments)
        try:
            with warnings.catch_warnings():
                # The sweeper asks and tells (Study.optimize would run the jobs in-process); the heartbeat and
                # stale-trial helpers it uses instead are marked experimental.
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                self._check_before_trials()
                super().sweep(arguments)
        except ValueError as error:
            if not isinstance(self.storage, optuna.storages.BaseStorage):
                raise  # failed before the storage opened
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            states = [t.state for t in study.trials]
            if optuna.trial.TrialState.COMPLETE in states:
                raise
            log.error("Study '%s': none of its %d trials completed (%s); see each job's results.json for the error",
                      self.study_name, len(states), error)

    def _refuse_seed_sweeps(self, arguments: List[str]) -> None:
        params = [f"{key}={value}" for key, value in (self.params or {}).items()] + list(arguments)
        distributions, fixed = create_params_from_overrides(params)
        if "seed" in distributions or (self.seeds and "seed" in fixed):
            raise ValueError("seed: under the Optuna sweeper `seed=1,2,3` (or a range) makes the seed a "
                             "hyperparameter that the sampler tunes; use hydra.sweeper.seeds=[1,2,3] to run each "
                             "trial once per seed and optimise their mean")

    def _check_before_trials(self) -> None:
        check_objective(self.config)
        objectives = objective_keys(self.config)
        if len(objectives) != len(self._get_directions()):
            raise ValueError(f"objective {objectives} has {len(objectives)} metric(s) but hydra.sweeper.direction "
                             f"has {len(self._get_directions())}: give one direction per objective metric")
        described = self.storage if isinstance(self.storage, (str, type(None))) else type(self.storage).__name__
        try:  # connect now: an unreachable database must fail before the first trial, not after it
            self.storage = open_storage(self.storage, self.config.hydra.sweep.dir, **self.heartbeat)
            existing = optuna.get_all_study_summaries(storage=self.storage)
        except Exception as error:  # noqa: BLE001 - any driver error means the same thing here
            # from None: the driver's own exception may quote the URL, password and all
            raise ValueError(redact_url_passwords(f"hydra.sweeper.storage: cannot open '{described}': {error}")) \
                from None
        log.info("Storage: %s", described or storage_url(None, self.config.hydra.sweep.dir))
        previous = next((s for s in existing if s.study_name == self.study_name), None)
        self.objectives = objectives
        if previous is not None and previous.n_trials:
            log.info("Resuming study '%s' with %d trials already stored", self.study_name, previous.n_trials)
            fail_stale_trials(optuna.load_study(study_name=self.study_name, storage=self.storage))

    def _configure_trials(self, trials: List[optuna.Trial], search_space_distributions: Any,
                          fixed_params: Any) -> Sequence[Sequence[str]]:
        overrides: List[Sequence[str]] = []
        if trials and "objectives" not in trials[0].study.user_attrs:  # names the values for the table
            trials[0].study.set_user_attr("objectives", self.objectives)
        # The upstream sweeper builds Optuna 2's distribution classes (LogUniformDistribution, ...), stored under
        # those names; Optuna's own copies of a trial (the retry callback) use today's, and a study refuses to mix
        # the two kinds for one parameter. Suggest with today's classes.
        distributions = {name: _convert_old_distribution_to_new_distribution(distribution)
                         for name, distribution in search_space_distributions.items()}
        for trial in trials:
            trial.study.sampler = self._sampler_for(trial)
            overrides += super()._configure_trials([trial], distributions, fixed_params)
        self.launcher.trials = trials
        return overrides

    def _sampler_for(self, trial: optuna.Trial) -> optuna.samplers.BaseSampler:
        """The configured sampler seeded from (its seed, the trial number); unseeded and grid samplers as they are."""
        config = self.config.hydra.sweeper.sampler
        if config.get("seed") is None or config.get("_partial_"):
            return trial.study.sampler
        seed = int(np.random.SeedSequence([int(config.seed), trial.number]).generate_state(1)[0])
        return instantiate(config, seed=seed)


class MedgrpoOptunaSweeper(OptunaSweeper):
    def __init__(self, seeds: Optional[List[int]] = None, heartbeat_interval: Optional[int] = 60,
                 grace_period: Optional[int] = None, max_retry: int = 0, **kwargs: Any) -> None:
        self.sweeper = _ResilientImpl(seeds=seeds, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                      max_retry=max_retry, **kwargs)


@dataclass
class MedgrpoOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.medgrpo_optuna.medgrpo_optuna_sweeper.MedgrpoOptunaSweeper"
    max_failure_rate: float = 1.0  # a failed trial is data, not a reason to stop the study
    # Each trial runs once per seed, each its own job; its value is their mean (spread in the trial's user attrs).
    seeds: Optional[List[int]] = None
    # RDB storages: a trial whose heartbeat (seconds) stops for grace_period (default 2 x interval) is FAIL.
    heartbeat_interval: Optional[int] = 60
    grace_period: Optional[int] = None
    # A trial killed with its process is queued again (same parameters) up to this many times; 0: recorded FAIL.
    max_retry: int = 0


ConfigStore.instance().store(group="hydra/sweeper", name="medgrpo_optuna", node=MedgrpoOptunaSweeperConf,
                             provider="medgrpo")
