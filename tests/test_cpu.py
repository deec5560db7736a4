"""A job's torch threads sized to the cores it has (medgrpo/cpu.py), and its OpenMP threads waiting without spinning.
The launcher's share of the cores is checked on a real submitit_local sweep in tests/test_launcher.py; the number in
a job's log and results.json in tests/test_entrypoint.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from medgrpo.cpu import cores_available, plan_threads, use_threads
from medgrpo.errors import ConfigError
from tests.conftest import ROOT


def cpu_cfg(threads=None, wait_policy="passive"):
    return OmegaConf.create({"threads": threads, "wait_policy": wait_policy})


def test_the_cores_this_process_may_run_on_decide_by_default():
    plan = plan_threads(cpu_cfg(), environ={})
    assert (plan.torch_threads, plan.source) == (len(os.sched_getaffinity(0)), "os.sched_getaffinity")
    assert plan.cores_available == cores_available() and plan.wait_policy is None


def test_the_launchers_share_then_the_environment_then_the_config_win_in_that_order():
    assert plan_threads(cpu_cfg(), launcher_cpus=1, environ={}).torch_threads == 1
    # a share larger than the CPUs this process may use is capped: threads beyond the cores only wait on each other
    capped = plan_threads(cpu_cfg(), launcher_cpus=cores_available() + 8, environ={})
    assert (capped.torch_threads, capped.source) == (cores_available(), "hydra.launcher.cpus_per_task")
    from_env = plan_threads(cpu_cfg(), launcher_cpus=1, environ={"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"})
    assert (from_env.torch_threads, from_env.source, from_env.wait_policy) == (3, "OMP_NUM_THREADS", "ACTIVE")
    explicit = plan_threads(cpu_cfg(threads=5), launcher_cpus=1, environ={"OMP_NUM_THREADS": "3"})
    assert (explicit.torch_threads, explicit.source) == (5, "cpu.threads")
    assert plan_threads(cpu_cfg(), environ={"OMP_NUM_THREADS": ""}).source == "os.sched_getaffinity"


@pytest.mark.parametrize("threads, wait_policy, key", [
    (0, "passive", "cpu.threads"), (-2, "passive", "cpu.threads"), ("all", "passive", "cpu.threads"),
    (True, "passive", "cpu.threads"), (None, "spin", "cpu.wait_policy"),
])
def test_bad_settings_name_their_key(threads, wait_policy, key):
    with pytest.raises(ConfigError) as error:
        plan_threads(cpu_cfg(threads, wait_policy), environ={})
    assert error.value.key == key


def test_use_threads_sets_torchs_pool():
    import torch

    before = torch.get_num_threads()
    try:
        assert use_threads(cpu_cfg(threads=1)).torch_threads == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# After a parallel region, how much CPU the process burns in 1 s of sleep: a spinning OpenMP worker burns it all.
SLEEPING_CPU = """
import resource, sys, time
from omegaconf import OmegaConf
from medgrpo.cpu import set_wait_policy
set_wait_policy(OmegaConf.create({"threads": None, "wait_policy": sys.argv[1]}))
import torch
torch.set_num_threads(2)
ones = torch.ones(4_000_000)
for _ in range(20):
    ones.add_(1.0)  # an OpenMP parallel region: the pool's worker has just worked
start = resource.getrusage(resource.RUSAGE_SELF)
time.sleep(1.0)
end = resource.getrusage(resource.RUSAGE_SELF)
print((end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime))
"""


@pytest.mark.slow  # two fresh interpreters load torch
@pytest.mark.skipif(cores_available() < 2, reason="needs 2 CPUs for an OpenMP worker thread")
def test_the_wait_policy_reaches_libgomp_when_set_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}

    def sleeping_cpu(policy: str) -> float:
        done = subprocess.run([sys.executable, "-c", SLEEPING_CPU, policy], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return float(done.stdout)

    passive, active = sleeping_cpu("passive"), sleeping_cpu("active")
    assert passive < 0.01, passive  # the worker sleeps
    assert active > 0.02 + 5 * passive, (active, passive)  # the same code with active: the worker spins (control)
