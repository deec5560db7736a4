"""Who may use a job folder, and whether its job still has to run.

    with hold_job_folder(output_dir):            # JobFolderBusy if a live job holds it
        done = finished_result(output_dir, resolved_config)   # results.json of an identical finished job, or None

The lock is an OS file lock (filelock), released by the kernel when its process dies, so a job killed with SIGKILL
never leaves a stale lock behind. A sweep re-run into the same sweep folder skips each job whose results.json is
`ok` with the same resolved config (VOLATILE_KEYS aside) and reruns the others; `train.rerun=true` reruns all.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from medgrpo.errors import MedgrpoError
from medgrpo.results import _json_safe, write_json_atomic

log = logging.getLogger(__name__)
LOCK_FILE = ".job.lock"
# Config keys that never change what a job computes: where files go, how it is logged, on how many threads, how it
# is (re)started.
VOLATILE_KEYS = ("paths", "logger", "cpu", "train.resume", "train.rerun")


class JobFolderBusy(MedgrpoError):
    """Another live job holds this job folder."""


@contextmanager
def hold_job_folder(output_dir: Path):
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(output_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise JobFolderBusy(f"job folder {output_dir} is in use by another running job ({_holder(output_dir)}); "
                            "wait for it to end, or choose another folder (hydra.run.dir=... / hydra.sweep.dir=...)"
                            ) from None
    try:
        yield
    finally:
        lock.release()


def _holder(output_dir: Path) -> str:
    """The live job as its results.json describes it (pid, host, start), for the refusal message."""
    try:
        result = json.loads((output_dir / "results.json").read_text())
    except (OSError, ValueError):
        return "no results.json yet"
    host = result.get("host")
    host = host.get("name") if isinstance(host, dict) else host
    return f"pid {result.get('pid')} on {host}, started {result.get('started_at')}"


def _without(config: dict, dotted_keys) -> dict:
    config = json.loads(json.dumps(_json_safe(config)))  # as results.json holds it
    for dotted in dotted_keys:
        *parents, last = dotted.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return config


def finished_result(output_dir: Path, resolved_config: dict) -> dict | None:
    """The results.json of a job that already ended `ok` with this config, or None (then the job runs)."""
    path = Path(output_dir) / "results.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if result.get("status") != "ok":
        return None
    if _without(result.get("config") or {}, VOLATILE_KEYS) != _without(resolved_config, VOLATILE_KEYS):
        log.info("%s ended ok with another config: running again", path)
        return None
    return result


def mark_skipped(output_dir: Path, result: dict) -> None:
    """Record that a sweep re-run reused this result (the sweep summary counts these)."""
    result["skipped_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(Path(output_dir) / "results.json", result)


def count_skipped(job_dirs, since: datetime) -> int:
    """How many of these job folders were skipped (already done) by a sweep started at `since`."""
    count = 0
    for job_dir in job_dirs:
        try:
            skipped = json.loads((Path(job_dir) / "results.json").read_text()).get("skipped_at")
        except (OSError, ValueError):
            continue
        if skipped and datetime.fromisoformat(skipped) >= since.replace(microsecond=0):
            count += 1
    return count
