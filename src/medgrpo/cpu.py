"""How many CPU threads a job's torch uses, and how its idle threads wait: sized to the cores the job really has.

Measured on a shared 2-core machine (issue 29; a tiny_learner training step, batch 8 x 400 tokens): torch's OpenMP
pool had one thread per core in every process, and libgomp's waiting threads spin (~3 ms at every barrier) for a
sibling whose core another process holds. Alone under an outside load of 3-4, a step took 2.3-3.6 s with 2 spinning
threads, 0.95 s with 2 sleeping ones or with 1 thread; two such processes at once (load 5): 7.9 s a step each with
spinning threads, 1.1-1.4 s without; CPU time per step 3.0 s against the work's 0.6 s. Hence, per job:
- threads (`cpu.threads`, else OMP_NUM_THREADS, else the launcher's cpus_per_task, else the CPUs this process may run
  on: os.sched_getaffinity, which taskset, cgroup cpusets and SLURM narrow), logged and written to results.json;
- `cpu.wait_policy` (OMP_WAIT_POLICY, read by libgomp when torch loads: src/run.py sets it first): passive threads
  sleep instead of spinning, which is what a job sharing its cores with unknown programs needs.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass

from omegaconf import DictConfig

from medgrpo.errors import ConfigError

log = logging.getLogger(__name__)

WAIT_POLICIES = ("passive", "active")


@dataclass(frozen=True)
class ThreadPlan:
    """What a job's torch runs with, and why (results.json `cpu`)."""

    torch_threads: int
    source: str            # which setting decided: cpu.threads | OMP_NUM_THREADS | the launcher | the CPUs available
    cores_available: int   # os.sched_getaffinity: the CPUs this process may run on
    wait_policy: str | None  # OMP_WAIT_POLICY as libgomp read it (None: libgomp's default, spin ~3 ms then sleep)

    def as_dict(self) -> dict:
        return asdict(self)


def cores_available() -> int:
    """The CPUs this process may run on (a taskset, cgroup cpuset or SLURM allocation narrows them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_threads(cpu_cfg: DictConfig, launcher_cpus: int | None = None, environ=os.environ) -> ThreadPlan:
    """The job's torch threads: cpu.threads, else OMP_NUM_THREADS, else the launcher's cpus_per_task (never more
    than the CPUs available), else the CPUs available."""
    cores = cores_available()
    setting = cpu_cfg.threads
    if setting is not None and (not isinstance(setting, int) or isinstance(setting, bool) or setting <= 0):
        raise ConfigError("cpu.threads", f"expected a positive integer or null (the cores this job has), got "
                                         f"{setting!r}")
    if cpu_cfg.wait_policy is not None and str(cpu_cfg.wait_policy).lower() not in WAIT_POLICIES:
        raise ConfigError("cpu.wait_policy", f"expected one of {list(WAIT_POLICIES)} or null, got "
                                             f"{cpu_cfg.wait_policy!r}")
    if setting is not None:
        threads, source = setting, "cpu.threads"
    elif (from_env := environ.get("OMP_NUM_THREADS", "").strip()).isdigit() and int(from_env) > 0:
        threads, source = int(from_env), "OMP_NUM_THREADS"
    elif launcher_cpus:
        threads, source = min(int(launcher_cpus), cores), "hydra.launcher.cpus_per_task"
    else:
        threads, source = cores, "os.sched_getaffinity"
    return ThreadPlan(threads, source, cores, environ.get("OMP_WAIT_POLICY"))


def set_wait_policy(cpu_cfg: DictConfig) -> None:
    """OMP_WAIT_POLICY from cpu.wait_policy, unless the environment sets it. libgomp reads it once, when torch loads:
    call this before anything imports torch (src/run.py does)."""
    if cpu_cfg.wait_policy is None or "OMP_WAIT_POLICY" in os.environ:
        return
    if "torch" in sys.modules:
        log.warning("cpu.wait_policy=%s comes too late in this process (torch is loaded): it applies to the next "
                    "process only", cpu_cfg.wait_policy)
        return
    os.environ["OMP_WAIT_POLICY"] = str(cpu_cfg.wait_policy).upper()


def use_threads(cpu_cfg: DictConfig) -> ThreadPlan:
    """Size torch's intra-op pool for this job and say so in the log."""
    import torch

    plan = plan_threads(cpu_cfg, launcher_cpus())
    torch.set_num_threads(plan.torch_threads)
    log.info("torch uses %d CPU thread(s) (%s; %d CPU(s) available to this process; OpenMP wait policy %s)",
             plan.torch_threads, plan.source, plan.cores_available, plan.wait_policy or "libgomp's default (spin)")
    return plan


def launcher_cpus() -> int | None:
    """hydra.launcher.cpus_per_task of the running job: SLURM's allocation, or this job's share of a submitit_local
    batch (hydra_plugins.medgrpo_launcher sets it); None for the basic launcher or outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().launcher.get("cpus_per_task")
