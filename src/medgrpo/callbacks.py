"""Hydra callbacks: at the end of a sweep, say how its jobs ended (a failed job does not stop a sweep, so the
summary is where failures become visible) and how to tabulate it. The jobs are read by medgrpo.analysis, the
same reader the ablation table uses."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from medgrpo.analysis.jobs import job_dirs, summarize_sweep
from medgrpo.jobfolder import count_skipped

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    started: datetime | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = datetime.now(timezone.utc)  # jobs marked skipped after this were skipped by this re-run

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarize_sweep(sweep_dir)
        counts = ", ".join(f"{len(names)} {status}" for status, names in summary.items() if names)
        skipped = count_skipped(job_dirs(sweep_dir), self.started) if self.started else 0
        log.info("Sweep %s: %s%s", sweep_dir, counts or "no jobs",
                 f" ({skipped} of the ok skipped: already done with the same config)" if skipped else "")
        for status in ("failed", "killed", "interrupted"):
            for line in summary[status]:
                log.warning("%s: %s", status, line)
        log.info("Table: make ablation-table SWEEP=%s", sweep_dir)
