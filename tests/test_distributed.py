"""Multi-process training through `accelerate launch`: two CPU processes over gloo, the DDP code path without GPUs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests._run import ROOT, read_results, run_entrypoint

pytestmark = [pytest.mark.slow, pytest.mark.scale]


def test_two_cpu_processes_train_and_rank_zero_writes_results(tmp_path, model_cache):
    accelerate = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
                  str(ROOT / "launch" / "cpu_2proc.yaml")]
    result = run_entrypoint("preset=tiny", "grpo.max_steps=2", "eval.limit=4", f"hydra.run.dir={tmp_path}",
                            cache=model_cache.parent, prefix=accelerate, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    results = read_results(tmp_path)
    assert results["status"] == "ok" and results["host"]["processes"] == 2
    assert results["metrics"]["train/steps"] == 2
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
