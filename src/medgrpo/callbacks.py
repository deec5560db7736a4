"""Hydra callbacks: at the end of a sweep, say how its jobs ended (a failed job does not stop a sweep, so the
summary is where failures become visible) and how to tabulate it."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def summarize_sweep(sweep_dir: Path) -> dict[str, list[str]]:
    """Job folder names by status (ok / failed / missing) with the error of each failed job."""
    summary: dict[str, list[str]] = {"ok": [], "failed": [], "missing": []}
    for job in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()):
        path = job / "results.json"
        if not path.is_file():
            summary["missing"].append(job.name)
            continue
        results = json.loads(path.read_text())
        if results.get("status") == "ok":
            summary["ok"].append(job.name)
        else:
            summary["failed"].append(f"{job.name}: {results.get('error', 'no error recorded')}")
    return summary


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarize_sweep(sweep_dir)
        log.info("Sweep %s: %d jobs ok, %d failed, %d without results", sweep_dir, len(summary["ok"]),
                 len(summary["failed"]), len(summary["missing"]))
        for line in summary["failed"]:
            log.warning("failed: %s", line)
        log.info("Table: make ablation-table SWEEP=%s", sweep_dir)
