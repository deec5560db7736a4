"""Jobs of a sweep as JobRow objects, whatever their source: results.json files on disk or W&B runs.

Both sources feed the same aggregation (medgrpo.analysis.table), and the sweep summary that Hydra's callback
logs at the end of a sweep (summarize_sweep). A job that left no results.json is a row with status "missing";
its overrides come from Hydra's .hydra/overrides.yaml. A results.json that still says "running" while its
process is gone (same host, dead pid: killed with SIGKILL, or the machine went down) reads as "killed".
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from medgrpo.analysis import AblationError

JOB_DIR = re.compile(r"^(\d+)(?:_|$)")  # Hydra sweep subdirs: <job num>[_<override_dirname>]
WANDB_STATUS = {"finished": "ok", "failed": "failed", "crashed": "failed", "killed": "failed"}
STATUSES = ("ok", "failed", "interrupted", "killed", "running", "missing")


@dataclass
class JobRow:
    """One job of a sweep. status: "ok" | "failed" | "interrupted" (SIGINT/SIGTERM) | "killed" (says running, its
    process is gone) | "running" | "missing" (no results.json). path: its job dir (None for W&B runs)."""

    name: str
    status: str
    overrides: dict[str, str]
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    path: Path | None = None


def split_override_dirname(text: str) -> list[str]:
    """'lora.rank=32,lora.target_modules=[q,v],seed=1' -> three overrides (a comma only splits before key=)."""
    return [part for part in re.split(r",(?=[^,=\[\]{}]+=)", text.strip()) if part]


def parse_overrides(items: list[str]) -> dict[str, str]:
    """['lora.rank=32', '+experiment=x'] -> {'lora.rank': '32', 'experiment': 'x'} (Hydra's +/++/~ dropped)."""
    parsed = {}
    for item in items:
        key, _, value = str(item).partition("=")
        parsed[key.strip().lstrip("+~")] = value.strip()
    return parsed


def numeric_metrics(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics dict (W&B summaries also hold tables and strings)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job subdirectories of a Hydra sweep dir, in job-number (= sweep) order."""
    found = [d for d in Path(sweep_dir).iterdir() if d.is_dir() and JOB_DIR.match(d.name)]
    return sorted(found, key=lambda d: int(JOB_DIR.match(d.name).group(1)))


def _job_overrides(job_dir: Path) -> list[str]:
    """A job's overrides when it left no results.json: Hydra's .hydra/overrides.yaml, else the dir name."""
    saved = job_dir / ".hydra" / "overrides.yaml"
    if saved.is_file():
        from omegaconf import OmegaConf

        return [str(item) for item in OmegaConf.load(saved)]
    return split_override_dirname(JOB_DIR.sub("", job_dir.name))


def _hostname(result: dict) -> str | None:
    """The machine a job ran on: results.json `hostname`, or `host` as a name or a dict with name/hostname."""
    host = result.get("host")
    if isinstance(host, dict):
        host = host.get("hostname") or host.get("name")
    return result.get("hostname") or (host if isinstance(host, str) else None)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def job_status(result: dict) -> str:
    """results.json's status; "running" with a dead pid on this host is "killed" (another host: can't tell)."""
    status = result.get("status")
    if status not in STATUSES[:-1]:
        return "missing"
    if status == "running":
        pid = _as_seed(result.get("pid"))
        if pid is not None and _hostname(result) in (None, socket.gethostname()) and not process_alive(pid):
            return "killed"
    return status


def load_job(job_dir: Path) -> JobRow:
    """Read one job dir's results.json into a JobRow (status "missing" when there is none)."""
    path = job_dir / "results.json"
    if not path.is_file():
        overrides = parse_overrides(_job_overrides(job_dir))
        return JobRow(job_dir.name, "missing", overrides, _as_seed(overrides.get("seed")), path=job_dir)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        overrides = parse_overrides(_job_overrides(job_dir))
        return JobRow(job_dir.name, "missing", overrides, _as_seed(overrides.get("seed")),
                      error=f"unreadable results.json: {error}", path=job_dir)
    overrides = parse_overrides(result.get("overrides") or _job_overrides(job_dir))
    status = job_status(result)
    error = result.get("error")
    if status == "killed" and not error:
        error = f"killed: results.json says running, but process {result.get('pid')} is gone"
    metrics = numeric_metrics(result.get("metrics") or {})
    if result.get("training_health"):  # the alarm count, a column with --metrics ...,health/alarms (medgrpo/health.py)
        metrics["health/alarms"] = float(len(result["training_health"]["alarms"]))
    return JobRow(
        name=job_dir.name,
        status=status,
        overrides=overrides,
        seed=_as_seed(result.get("seed", overrides.get("seed"))),
        metrics=metrics,
        error=error,
        path=job_dir,
    )


def _as_seed(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def load_sweep_rows(sweep_dir: Path) -> list[JobRow]:
    """Every job of a sweep dir, in sweep order."""
    return [load_job(d) for d in job_dirs(sweep_dir)]


def drop_repeats(rows: list[JobRow]) -> tuple[list[JobRow], int]:
    """One job per setting and seed: an Optuna study that samples a setting twice, or a trial retried after its
    process died, runs the same setting with the same seed again; that is a repeat, not another seed. Keeps the
    last job that ended ok (else the last one), in sweep order; returns the kept rows and how many were dropped."""
    kept: dict[tuple, JobRow] = {}
    for row in rows:
        key = (tuple(sorted((k, v) for k, v in row.overrides.items() if k != "seed")), row.seed)
        if key not in kept or row.status == "ok" or kept[key].status != "ok":
            kept[key] = row
    chosen = {id(row) for row in kept.values()}
    return [row for row in rows if id(row) in chosen], len(rows) - len(kept)


def summarize_sweep(sweep_dir: Path) -> dict[str, list[str]]:
    """Job folder names by status (STATUSES, each key present), with the error of each job that did not end ok."""
    summary: dict[str, list[str]] = {status: [] for status in STATUSES}
    for row in load_sweep_rows(sweep_dir):
        detail = f": {row.error or 'no error recorded'}" if row.status in ("failed", "interrupted", "killed") else ""
        summary[row.status].append(row.name + detail)
    return summary


def find_newest_sweep(root: Path = Path("multirun")) -> Path | None:
    """The newest <root>/<task>/<date_time>/ holding job dirs: by the date_time in its name, else its mtime."""
    def started(sweep: Path) -> tuple[datetime, float]:
        mtime = sweep.stat().st_mtime
        try:
            return datetime.strptime(sweep.name, "%Y-%m-%d_%H-%M-%S"), mtime
        except ValueError:
            return datetime.fromtimestamp(mtime), mtime

    sweeps = [d for d in Path(root).glob("*/*") if d.is_dir() and job_dirs(d)]
    return max(sweeps, key=started) if sweeps else None


def wandb_row(name: str | None, config: dict, summary: dict, state: str) -> JobRow:
    """One W&B run as a JobRow. The run name is the job's Hydra override_dirname (see medgrpo.tracking), so it
    carries the overrides; config gives the seed; summary holds the last logged metrics."""
    name = name or ""
    overrides = parse_overrides(split_override_dirname(name)) if "=" in name else {}
    status = WANDB_STATUS.get(str(state).lower(), "missing")
    return JobRow(name, status, overrides, _as_seed(config.get("seed", overrides.get("seed"))),
                  numeric_metrics(summary), error=f"W&B run {state}" if status == "failed" else None)


def load_wandb_rows(group: str, project: str, entity: str | None = None) -> list[JobRow]:
    """The runs of a W&B group (one sweep), oldest first, through the public API (needs network + login)."""
    import wandb

    path = f"{entity}/{project}" if entity else project
    try:
        runs = wandb.Api().runs(path, filters={"group": group}, order="+created_at")
        # summary_metrics is the plain dict behind run.summary
        return [wandb_row(run.name, dict(run.config), dict(run.summary_metrics), run.state) for run in runs]
    except Exception as error:  # no login, no network, no such project: say which, in one line
        raise AblationError(f"W&B API failed for project '{path}', group '{group}': "
                            f"{type(error).__name__}: {error}") from error
