"""The Optuna study behind a sweep run with hparams_search=...: trial states (FAIL included), params, values and
parameter importances. Read-only: a study that cannot be found is explained, never created."""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medgrpo.analysis import AblationError
from medgrpo.analysis.jobs import JobRow, job_dirs, load_job
from medgrpo.analysis.render import fmt
from medgrpo.secrets import redact_url_passwords


def read_sweeper_config(sweep_dir: Path) -> dict:
    """hydra.sweeper of a sweep: from multirun.yaml (basic sweeper), else from a job's .hydra/hydra.yaml (the
    Optuna sweeper writes no multirun.yaml). Interpolations are left unresolved; {} when neither exists."""
    from omegaconf import OmegaConf

    sweep_dir = Path(sweep_dir)
    candidates = [sweep_dir / "multirun.yaml"] + [d / ".hydra" / "hydra.yaml" for d in job_dirs(sweep_dir)]
    for path in candidates:
        if path.is_file():
            sweeper = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper")
            return OmegaConf.to_container(sweeper, resolve=False) if sweeper is not None else {}
    return {}


def is_optuna(sweeper: dict) -> bool:
    return "optuna" in str(sweeper.get("_target_", "")).lower()


def resolve_storage(storage: str | None, sweep_dir: Path) -> str:
    """The study's storage URL, with ${hydra.sweep.dir} filled in and a moved sweep's sqlite file found beside it.
    storage null is what our sweeper turns into <sweep dir>/optuna.db (hydra_plugins.medgrpo_optuna).
    Raises AblationError when it cannot be opened (never lets Optuna create an empty database)."""
    if not storage:
        default = Path(sweep_dir) / "optuna.db"
        if not default.is_file():
            raise AblationError(f"hydra.sweeper.storage is null and there is no {default}: the study lived in "
                                "memory only (another sweeper), or its database was moved away")
        return f"sqlite:///{default.resolve()}"
    resolved = Path(sweep_dir).resolve()
    url = str(storage).replace("${hydra.sweep.dir}", str(resolved)).replace("${hydra:sweep.dir}", str(resolved))
    if "${" in url:
        raise AblationError(f"cannot resolve the interpolation in hydra.sweeper.storage={storage}")
    if url.startswith("sqlite:///") or "://" not in url:  # a SQLite database or a journal file
        db = Path(url.removeprefix("sqlite:///"))
        if not db.is_file():
            beside = Path(sweep_dir) / db.name
            if not beside.is_file():
                raise AblationError(f"Optuna storage file not found: {db} (nor {beside})")
            url = ("sqlite:///" if url.startswith("sqlite:///") else "") + str(beside.resolve())
    return url


def open_storage(storage: str):
    """An Optuna storage from a URL, or from a file path: a journal file (the convention of `optuna --storage`)."""
    if "://" in storage:
        return storage
    if not Path(storage).is_file():
        raise AblationError(f"Optuna journal file not found: {storage} (a database needs a URL such as "
                            "postgresql+psycopg2://user@host/db)")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(storage))


TRIAL_STATUS = {"COMPLETE": "ok", "FAIL": "failed", "RUNNING": "running", "WAITING": "missing"}


def load_study_rows(study_name: str, storage: str) -> list[JobRow]:
    """The jobs of an Optuna study, whichever machines and sweep folders ran them: each trial's job dirs (the
    user attribute job_dirs that hydra_plugins.medgrpo_optuna records), read from their results.json where this
    machine sees them; otherwise one row from the trial itself, its values under the study's objective names."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError as error:
        raise AblationError(f"no study '{study_name}' in that storage") from error
    objectives = study.user_attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))]
    rows = []
    for trial in study.trials:
        dirs = [Path(d) for d in trial.user_attrs.get("job_dirs", [])]
        if dirs and all(d.is_dir() for d in dirs):
            rows += [load_job(d) for d in dirs]
        else:
            rows.append(JobRow(f"trial {trial.number}", TRIAL_STATUS.get(trial.state.name, "missing"),
                               {k: str(v) for k, v in trial.params.items()},
                               metrics=dict(zip(objectives, trial.values or []))))
    return rows


@dataclass
class StudySummary:
    """What the report says about an Optuna study; error/importance_note say why a part is missing."""

    name: str | None
    storage: str | None
    directions: list[str] = field(default_factory=list)
    trials: list[dict] = field(default_factory=list)  # number, state, values, params
    importances: list[dict[str, float]] = field(default_factory=list)  # one dict per objective
    importance_note: str | None = None
    error: str | None = None

    @property
    def state_counts(self) -> dict[str, int]:
        return dict(Counter(t["state"] for t in self.trials))


def load_study_summary(sweep_dir: Path, sweeper: dict) -> StudySummary:
    """Trials (states incl. FAIL, params, values) and parameter importances of a sweep's Optuna study."""
    summary = StudySummary(sweeper.get("study_name"), sweeper.get("storage"))
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        summary.storage = resolve_storage(summary.storage, sweep_dir)
        with warnings.catch_warnings():  # studies written by hydra-optuna-sweeper use deprecated distributions
            warnings.simplefilter("ignore", FutureWarning)
            study = optuna.load_study(study_name=summary.name, storage=open_storage(summary.storage))
            trials = study.trials
    except Exception as error:  # noqa: BLE001 - a missing study must not cost the table
        summary.error = redact_url_passwords(f"could not load the Optuna study: {error}")
        return summary
    summary.name = study.study_name
    summary.directions = [d.name.lower() for d in study.directions]
    summary.trials = [{"number": t.number, "state": t.state.name, "values": t.values, "params": t.params}
                      for t in trials]
    complete = sum(t["state"] == "COMPLETE" for t in summary.trials)
    if complete < 2:
        summary.importance_note = f"parameter importances need >= 2 completed trials; the study has {complete}"
        return summary
    notes = []
    for index in range(len(summary.directions)):
        target = (lambda t, i=index: t.values[i]) if len(summary.directions) > 1 else None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                summary.importances.append(optuna.importance.get_param_importances(study, target=target))
            notes += [str(w.message) for w in caught if "importance" in str(w.message).lower()]
        except Exception as error:  # noqa: BLE001 - e.g. no parameter varies
            summary.importances = []
            summary.importance_note = f"parameter importances failed: {type(error).__name__}: {error}"
            return summary
    summary.importance_note = " ".join(dict.fromkeys(notes)) or None
    return summary


def study_markdown(summary: StudySummary, files: list[str]) -> str:
    lines = [f"## Optuna study `{summary.name}`", ""]
    if summary.error:
        return "\n".join(lines + [f"No study history: {summary.error}."])
    counts = ", ".join(f"{state}: {count}" for state, count in summary.state_counts.items())
    storage = redact_url_passwords(str(summary.storage))
    lines.append(f"Storage `{storage}`, direction {', '.join(summary.directions)}; trials — {counts}.")
    done = [t for t in summary.trials if t["state"] == "COMPLETE"]
    if done and len(summary.directions) == 1:
        pick = max if summary.directions[0] == "maximize" else min
        best = pick(done, key=lambda t: t["values"][0])
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        lines.append(f"Best trial #{best['number']}: {fmt(best['values'][0])} with {params}.")
    for index, importances in enumerate(summary.importances):
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
        which = f" (objective {index})" if len(summary.importances) > 1 else ""
        lines.append(f"Parameter importances{which}: {ranked}.")
    if summary.importance_note:
        lines.append(f"Importances: {summary.importance_note}")
    lines += ["", *(f"![{name}]({name})" for name in files)]
    return "\n".join(lines)
