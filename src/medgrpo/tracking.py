"""Experiment tracking: one W&B run per job, or a null tracker when logging is off.

The run is grouped by sweep (group = the sweep directory's name), named by the job's overrides, and finished
when the job ends — also inside a multirun, where a second wandb.init() would otherwise return the first run.
If W&B cannot be reached the job goes on offline with a warning: a run never fails because of logging.
TRL's own reporting (report_to=["wandb"]) goes into the same run because it reuses the active wandb.run.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class NullTracker:
    """Tracking switched off (logger=disabled): every call does nothing."""

    report_to: list[str] = []

    def log(self, metrics: dict[str, float]) -> None:
        pass

    def log_table(self, key: str, rows: list[dict]) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass

    def describe(self) -> dict:
        """What results.json records about the tracking run."""
        return {"mode": "disabled"}


class WandbTracker(NullTracker):
    report_to = ["wandb"]

    def __init__(self, run):
        self.run = run

    # No explicit step: TRL advances W&B's step on its own and W&B drops data logged at an older step.
    # Callers put "train/global_step" in the metrics instead, the x-axis transformers declares.
    def log(self, metrics):
        self.run.log(metrics)

    def log_table(self, key, rows):
        import wandb

        if rows:
            columns = list(rows[0])
            table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
            self.run.log({key: table})

    def summary(self, metrics):
        self.run.summary.update(metrics)

    def finish(self, failed=False):
        self.run.finish(exit_code=1 if failed else 0)

    def describe(self):
        run = self.run
        return {"mode": run.settings.mode, "id": run.id, "project": run.project, "group": run.group,
                "name": run.name, "dir": run.dir}


def _init_wandb(mode: str, **kwargs):
    import wandb

    return wandb.init(mode=mode, reinit="finish_previous", **kwargs)


def start_tracking(logger_cfg, config: dict, output_dir: Path, name: str, group: str | None) -> NullTracker:
    """Start the job's tracker. WANDB_MODE in the environment overrides logger.mode (tests set it)."""
    mode = os.environ.get("WANDB_MODE", logger_cfg.mode)
    if mode == "disabled":
        return NullTracker()
    kwargs = dict(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        group=logger_cfg.group or group,
        name=name,
        dir=str(output_dir),
        config=config,
        tags=list(logger_cfg.tags),
    )
    try:
        return WandbTracker(_init_wandb(mode, **kwargs))
    except Exception as error:  # noqa: BLE001 - any W&B failure must not cost the run
        if mode == "offline":
            log.warning("W&B could not start even offline (%s); continuing without tracking", error)
            return NullTracker()
        log.warning("W&B unreachable (%s): continuing offline; sync later with `wandb sync %s/wandb`",
                    error, output_dir)
        os.environ["WANDB_MODE"] = "offline"  # TRL's callback must not try the network again either
        try:
            return WandbTracker(_init_wandb("offline", **kwargs))
        except Exception as offline_error:  # noqa: BLE001
            log.warning("W&B offline failed too (%s); continuing without tracking", offline_error)
            return NullTracker()
