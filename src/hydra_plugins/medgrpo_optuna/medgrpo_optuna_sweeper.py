"""hydra/sweeper=medgrpo_optuna: hydra-optuna-sweeper, made safe for long studies.

Storage defaults to SQLite in the sweep dir. The upstream sweeper (1.3.0) crashes a whole study when every
trial failed, numbers job directories from 0 again when a study is resumed (overwriting earlier trials'
results), and finds a bad storage URL or objective only after the first trial. This subclass checks the storage
and the objective before any trial runs, makes SQLite paths absolute (so a resumed study finds its file),
continues job numbering after the trials already stored, and ends an all-failed study with a clear message
instead of a traceback. Failed trials (an exception, OOM or a NaN objective: medgrpo jobs return None then) are
recorded as FAIL by the upstream code and the study goes on. A storage URL's password is masked in every message
and log line (the upstream sweeper logs the URL as it is); pass it from the environment:
hydra.sweeper.storage='${oc.env:MEDGRPO_OPTUNA_STORAGE}'.

No `from __future__ import annotations` here: Hydra executes plugin modules outside sys.modules, where
dataclasses cannot resolve string annotations.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import optuna
from hydra.core.config_store import ConfigStore
from medgrpo.config import check_objective, objective_keys
from medgrpo.secrets import mask_url_passwords_in_logs, redact_url_passwords
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)
mask_url_passwords_in_logs(log, logging.getLogger(OptunaSweeperImpl.__module__))  # upstream logs "Storage: <url>"


def storage_url(storage: Optional[str], sweep_dir: str) -> str:
    """The study's storage: <sweep dir>/optuna.db when none is given; SQLite paths made absolute, folder created."""
    prefix = "sqlite:///"
    if not storage:
        storage = prefix + str(Path(sweep_dir) / "optuna.db")
    if not storage.startswith(prefix):
        return storage
    path = Path(storage[len(prefix):]).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)  # the sweep dir does not exist before the first job
    return prefix + str(path)


class _ResilientImpl(OptunaSweeperImpl):
    def sweep(self, arguments: List[str]) -> None:
        self.storage = storage_url(self.storage, self.config.hydra.sweep.dir)
        self._check_before_trials()
        try:
            super().sweep(arguments)
        except ValueError as error:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            states = [t.state for t in study.trials]
            if optuna.trial.TrialState.COMPLETE in states:
                raise
            log.error("Study '%s': none of its %d trials completed (%s); see each job's results.json for the error",
                      self.study_name, len(states), error)

    def _check_before_trials(self) -> None:
        check_objective(self.config)
        objectives = objective_keys(self.config)
        if len(objectives) != len(self._get_directions()):
            raise ValueError(f"objective {objectives} has {len(objectives)} metric(s) but hydra.sweeper.direction "
                             f"has {len(self._get_directions())}: give one direction per objective metric")
        try:  # connect now: an unreachable database must fail before the first trial, not after it
            existing = optuna.get_all_study_summaries(storage=self.storage)
        except Exception as error:  # noqa: BLE001 - any driver error means the same thing here
            # from None: the driver's own exception may quote the URL, password and all
            raise ValueError(redact_url_passwords(f"hydra.sweeper.storage: cannot open '{self.storage}': {error}")) \
                from None
        previous = next((s.n_trials for s in existing if s.study_name == self.study_name), 0)
        if previous:
            log.info("Resuming study '%s' with %d trials already stored", self.study_name, previous)
            self.job_idx = previous  # job directories continue after the stored trials


class MedgrpoOptunaSweeper(OptunaSweeper):
    def __init__(self, **kwargs: Any) -> None:  # the arguments of OptunaSweeper, passed to our implementation
        self.sweeper = _ResilientImpl(**kwargs)


@dataclass
class MedgrpoOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.medgrpo_optuna.medgrpo_optuna_sweeper.MedgrpoOptunaSweeper"
    max_failure_rate: float = 1.0  # a failed trial is data, not a reason to stop the study


ConfigStore.instance().store(group="hydra/sweeper", name="medgrpo_optuna", node=MedgrpoOptunaSweeperConf,
                             provider="medgrpo")
