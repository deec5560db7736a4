"""hydra/launcher=submitit_local for real: a 2x2 grid of tiny jobs, each in its own process (submitit starts one
per job), finding the shared data cache and tiny model, and the ablation table reading the sweep."""
from __future__ import annotations

import os

import pytest

from tests._run import main_table_rows, read_results, run_entrypoint, run_module
from tests.test_sweeps import job_dirs

pytestmark = [pytest.mark.slow, pytest.mark.scale]
TINY_JOB = ["preset=tiny", "grpo.max_steps=1", "eval.limit=2"]


def test_a_grid_through_submitit_local_runs_each_job_in_its_own_process(tmp_path, model_cache):
    sweep = tmp_path / "grid"
    result = run_entrypoint("-m", "hydra/launcher=submitit_local", *TINY_JOB, "lora.rank=4,8",
                            "grpo.learning_rate=1e-5,1e-4", f"hydra.sweep.dir={sweep}", cache=model_cache.parent, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = [read_results(job) for job in job_dirs(sweep)]
    assert [r["status"] for r in runs] == ["ok"] * 4, [r.get("error") for r in runs]
    pids = {r["pid"] for r in runs}
    assert len(pids) == 4 and os.getpid() not in pids  # one process per job, none of them the sweeper
    # the 4 jobs of the batch run at once: each one's torch got its share of the cores, not all of them
    share = max(1, len(os.sched_getaffinity(0)) // 4)
    assert {(r["cpu"]["torch_threads"], r["cpu"]["source"]) for r in runs} == {(share, "hydra.launcher.cpus_per_task")}
    assert all(r["overrides"] == [o for o in r["overrides"] if not o.startswith("hydra.")] for r in runs)
    assert {r["host"]["name"] for r in runs} == {os.uname().nodename}
    # the jobs used the cache passed on the command line: its tiny model and prepared data, no second copy
    assert {r["config"]["paths"]["cache_dir"] for r in runs} == {str(model_cache.parent)}
    assert all(r["metrics"]["train/steps"] == 1 for r in runs)
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 4  # submitit ran them, not the basic launcher

    table = run_module("analysis.ablation_table", "--sweep", str(sweep))
    assert table.returncode == 0, table.stderr
    rows = main_table_rows(table.stdout)
    assert len(rows) == 4, table.stdout
