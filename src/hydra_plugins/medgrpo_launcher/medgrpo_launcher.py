"""hydra/launcher=submitit_local, with each job of a batch given its share of this machine's cores.

hydra-submitit-launcher's LocalLauncher starts every job of a batch at once, each in its own process, and does not
enforce cpus_per_task. Each job's torch then took every core, and jobs side by side spun against each other
(medgrpo/cpu.py has the measurements). This subclass tells each job its share: hydra.launcher.cpus_per_task as the
user set it, else the CPUs available divided by the jobs in the batch (at least 1). The job sizes torch's threads
from it (medgrpo.cpu.use_threads) and records it in results.json `cpu`.
"""
from __future__ import annotations

from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

from medgrpo.cpu import cores_available


class MedgrpoLocalLauncher(LocalLauncher):
    cpus_per_job: int | None = None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        self.cpus_per_job = self.params.get("cpus_per_task") or max(1, cores_available() // len(job_overrides))
        return super().launch(job_overrides, initial_job_idx)

    def __call__(self, sweep_overrides: list[str], *args: Any) -> JobReturn:
        """Runs in the job's process: the share reaches the job as its hydra.launcher.cpus_per_task (a Hydra
        override, so the job's folder name and its task overrides stay as they were)."""
        share = [f"hydra.launcher.cpus_per_task={self.cpus_per_job}"] if self.cpus_per_job else []
        return super().__call__([*sweep_overrides, *share], *args)
