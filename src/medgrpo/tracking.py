"""Experiment tracking: one W&B run per job, or a null tracker when logging is off.

The run is grouped by sweep (group = the sweep directory's name), named by the job's overrides, and finished
when the job ends — also inside a multirun, where a second wandb.init() would otherwise return the first run.
If W&B cannot be reached within logger.init_timeout_s the job goes on offline with a warning, and if W&B fails
mid-run (its wandb-core process died, say) the job goes on without tracking: a run never fails because of
logging, and results.json holds every metric anyway.
TRL's own reporting (report_to=["wandb"]) goes into the same run because it reuses the active wandb.run;
guard_trainer_reporting makes its callback fail the same safe way.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger(__name__)


def _tracking_lost(error: Exception) -> None:
    log.warning("W&B stopped working (%s: %s): the job goes on without tracking; results.json has every metric",
                type(error).__name__, error)


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
        import wandb

        self.run = run
        self.lost = False  # W&B failed once: every later call is skipped
        # TRL also logs through the module-level wandb.log (its profiler, completion tables), outside any callback;
        # wandb.init bound it to this run and run.finish() unbinds it again.
        wandb.log = lambda *args, **kwargs: self._safely(lambda: run.log(*args, **kwargs))

    def _safely(self, call) -> None:
        if self.lost:
            return
        try:
            call()
        except Exception as error:  # noqa: BLE001 - W&B failing must not cost the run
            self.lost = True
            _tracking_lost(error)

    # No explicit step: TRL advances W&B's step on its own and W&B drops data logged at an older step.
    # Callers put "train/global_step" in the metrics instead, the x-axis transformers declares.
    def log(self, metrics):
        self._safely(lambda: self.run.log(metrics))

    def log_table(self, key, rows):
        import wandb

        if rows:
            columns = list(rows[0])
            table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
            self._safely(lambda: self.run.log({key: table}))

    def summary(self, metrics):
        self._safely(lambda: self.run.summary.update(metrics))

    def finish(self, failed=False):
        self._safely(lambda: self.run.finish(exit_code=1 if failed else 0))

    def describe(self):
        run = self.run
        return {"mode": run.settings.mode, "id": run.id, "project": run.project, "group": run.group,
                "name": run.name, "dir": run.dir}


class FailSafeCallback(TrainerCallback):
    """Runs another trainer callback's events until one raises; then warns once and skips it from there on."""

    def __init__(self, inner: TrainerCallback):
        self.inner = inner
        self.lost = False


def _fail_safe_event(event: str):
    def call(self, args, state, control, **kwargs):
        if self.lost:
            return None
        try:
            return getattr(self.inner, event)(args, state, control, **kwargs)
        except Exception as error:  # noqa: BLE001
            self.lost = True
            _tracking_lost(error)
            return None

    return call


for _event in [name for name in vars(TrainerCallback) if name.startswith("on_")]:
    setattr(FailSafeCallback, _event, _fail_safe_event(_event))


def guard_trainer_reporting(trainer) -> None:
    """Wrap the trainer's W&B callback (report_to=["wandb"]) in FailSafeCallback."""
    from transformers.integrations import WandbCallback

    handler = trainer.callback_handler
    handler.callbacks = [FailSafeCallback(cb) if isinstance(cb, WandbCallback) else cb for cb in handler.callbacks]


def _init_wandb(mode: str, init_timeout_s: float, **kwargs):
    import wandb

    # init_timeout bounds the wait for the W&B service to register the run (wandb's default is 90 s). Before that,
    # wandb 0.31 asks the server whose API key it has (the "viewer", for its "logged in as" line) through wandb-core,
    # 5 s per try and tried twice: with W&B unreachable, init_timeout 3 took 14 s. Without the viewer query the
    # wait is init_timeout plus the service's start; the server still fills in the default entity.
    wandb.setup(settings=wandb.Settings(x_disable_viewer=True))
    return wandb.init(mode=mode, reinit="finish_previous", settings=wandb.Settings(init_timeout=init_timeout_s),
                      **kwargs)


def start_tracking(logger_cfg, config: dict, output_dir: Path, name: str, group: str | None) -> NullTracker:
    """Start the job's tracker. WANDB_MODE and WANDB_INIT_TIMEOUT in the environment override logger.mode and
    logger.init_timeout_s (tests set them; make exports WANDB_MODE=offline), except that logger=disabled always
    means no W&B: a user who asks for none gets none, whatever the environment says."""
    mode = "disabled" if logger_cfg.mode == "disabled" else os.environ.get("WANDB_MODE", logger_cfg.mode)
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
    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", logger_cfg.get("init_timeout_s", 20)))
    started = time.monotonic()
    try:
        return WandbTracker(_init_wandb(mode, timeout, **kwargs))
    except Exception as error:  # noqa: BLE001 - any W&B failure must not cost the run
        if mode == "offline":
            log.warning("W&B could not start even offline (%s); continuing without tracking", error)
            return NullTracker()
        log.warning("W&B unreachable after %.0f s (%s): continuing offline; sync later with `wandb sync %s/wandb`",
                    time.monotonic() - started, error, output_dir)
        os.environ["WANDB_MODE"] = "offline"  # TRL's callback must not try the network again either
        try:
            return WandbTracker(_init_wandb("offline", timeout, **kwargs))
        except Exception as offline_error:  # noqa: BLE001
            log.warning("W&B offline failed too (%s); continuing without tracking", offline_error)
            return NullTracker()
