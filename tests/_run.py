"""Run the real entrypoint in a subprocess, as a user would (shared by the slow integration tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_entrypoint(*overrides: str, cache: Path, env: dict | None = None, timeout: int = 300,
                   prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python src/run.py <overrides>` (or `<prefix> src/run.py ...`, e.g. accelerate launch), W&B off: starting its
    offline service costs a job ~2.6 s; a test that reads what W&B wrote passes env={"WANDB_MODE": "offline"}."""
    command = [*(prefix or [sys.executable]), str(ROOT / "src" / "run.py"), *overrides, f"paths.cache_dir={cache}"]
    return subprocess.run(command, cwd=ROOT, env=_job_environment(env), capture_output=True, text=True,
                          timeout=timeout)


def _job_environment(env: dict | None) -> dict:
    """What an entrypoint job runs with: offline, full Hydra errors, W&B off unless `env` turns it on."""
    return {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "1", **(env or {})}


def run_module(module: str, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from the repository root, offline."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def read_results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def start_entrypoint(*overrides: str, cache: Path, env: dict | None = None) -> subprocess.Popen:
    """run_entrypoint without waiting: for tests that signal or race the job (output merged into .stdout)."""
    command = [sys.executable, str(ROOT / "src" / "run.py"), *overrides, f"paths.cache_dir={cache}"]
    return subprocess.Popen(command, cwd=ROOT, env=_job_environment(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 600) -> None:
    """Poll condition() until true; fail with the job's output if it ends first or the time runs out."""
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"job ended (rc {process.returncode}) before {what}:\n{process.stdout.read()[-3000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def training_started(job_dir: Path) -> bool:
    """The job logged the start of GRPO (medgrpo.train) in its Hydra log."""
    log = Path(job_dir) / "run.log"
    return log.is_file() and "GRPO:" in log.read_text()


def main_table_rows(markdown: str) -> list[str]:
    """The setting rows of an ablation report's main table (the sections below it repeat the settings)."""
    table = markdown.split("\n\n| setting", 1)[1].split("\n\n", 1)[0]
    return [line for line in table.splitlines()[2:] if line.startswith("|")]
