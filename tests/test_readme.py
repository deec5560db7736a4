"""The README's commands, read from README.md itself (never retyped), run as a user would run them.

A command for the tiny CPU setup must work as written. A command that needs a GPU or the model hub must refuse
cleanly here: a non-zero exit (or, in a sweep, every job recorded as failed) with a one-line reason and no stack
trace. `<job dir>` and `predictions.jsonl` stand for the job the tiny command wrote. Commands that cannot run inside
the test suite say why, as skips.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

NOT_RUN_HERE = {
    "make test": "it is the command running this test",
    "make demo": "it trains for minutes; its parts (SFT -> GRPO sweep, ablation table) are the slow tests",
    "make bench": "benchmarks take minutes and are not tests",
    "make gpu-check": "it needs a CUDA GPU (tests/test_gpu_check.py checks its refusal on CPU)",
    "make install-gpu": "it installs the CUDA stack",
    "make chat": "it serves until stopped (tests/test_chat.py drives the same app)",
    "conda ": "conda is not part of the CPU setup",
}


def readme_commands() -> list[str]:
    """Each command line of the README's bash blocks, without its trailing comment."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command.startswith(("python ", "make ", "conda ")):
                commands.append(command)
    return commands


COMMANDS = list(dict.fromkeys(readme_commands()))  # a command shown twice runs once


@pytest.fixture(scope="module")
def env(tmp_path_factory, model_cache):
    cache = model_cache.parent
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MEDGRPO_CACHE=str(cache))
    return {"vars": environment, "root": tmp_path_factory.mktemp("readme")}


def run(command: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=ROOT, env=env["vars"], capture_output=True, text=True, timeout=timeout)


def with_output_dir(command: str, folder: Path) -> str:
    """The command, writing into the test's folder (a README command writes under outputs/ or multirun/). A GPU
    sweep, refused here job by job alike, runs its jobs in this one process (a process per job only adds 10 s of
    imports each: tests/test_launcher.py runs that launcher), and an Optuna study is cut to 2 trials."""
    multirun = " -m " in f" {command} "
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    in_process = " hydra/launcher=basic" if multirun and "preset=tiny" not in command else ""
    trials = " hydra.sweeper.n_trials=2" if "hparams_search=" in command else ""
    return f"{command} {key}={folder} logger=disabled{in_process}{trials}"


# The README's tiny CPU run: the job that `<job dir>` and `predictions.jsonl` stand for.
TINY_RUN = next((c for c in COMMANDS if c.startswith("python src/run.py") and "preset=tiny" in c and " -m " not in c),
                None)


@pytest.fixture(scope="module")
def tiny_job(env) -> Path:
    """The README's tiny command, as written: the job the other commands' placeholders stand for."""
    assert TINY_RUN, "the README shows no tiny CPU run"
    job = env["root"] / "tiny_job"
    done = run(with_output_dir(TINY_RUN, job), env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((job / "results.json").read_text())["status"] == "ok"
    return job


def test_the_readme_shows_its_commands():
    assert "make demo" in COMMANDS and "make test" in COMMANDS
    assert any("preset=tiny" in c for c in COMMANDS) and any(c.startswith("python -m medgrpo.grading") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(command, env, request):
    reason = next((why for prefix, why in NOT_RUN_HERE.items() if command.startswith(prefix)), None)
    if reason:
        pytest.skip(f"README command `{command}` is not run here: {reason}")
    if command == TINY_RUN:
        request.getfixturevalue("tiny_job")  # it runs this command, as written, once for the whole module
        return
    folder = env["root"] / re.sub(r"\W+", "_", command)[:80]
    if "<job dir>" in command or "predictions.jsonl" in command:
        job = request.getfixturevalue("tiny_job")
        command = command.replace("<job dir>", str(job)).replace(
            "predictions.jsonl", str(job / "predictions" / "pubmedqa.jsonl"))
    if command.startswith("make ablation-table"):
        sweep = env["root"] / "sweep_for_table"
        made = run(f"python src/run.py -m preset=tiny grpo.max_steps=1 eval.limit=2 lora.rank=4,8 "
                   f"hydra.sweep.dir={sweep} logger=disabled", env)
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
        command = re.sub(r"\[SWEEP=[^\]]*\]", f"SWEEP={sweep}", command)
    if command.startswith("python src/run.py") and "--help" not in command:
        command = with_output_dir(command, folder)
    if "eval.adapter_path=" in command:
        command += " eval.limit=4"  # the tiny job's evaluation on fewer items: the length changes no wiring
    done = run(command, env)
    output = done.stdout + done.stderr
    if (command.startswith("python src/run.py") and "--help" not in command and "preset=tiny" not in command
            and "eval.adapter_path=" not in command):
        assert_refuses_cleanly(done, output, folder, multirun=" -m " in f" {command} ")
        return
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output


def assert_refuses_cleanly(done, output: str, folder: Path, multirun: bool) -> None:
    """A GPU or hub command on this CPU machine without network: stopped before any model loads, one line why."""
    assert "Traceback" not in output, output[-4000:]
    results = sorted(folder.rglob("results.json"))
    assert results, f"no job recorded its refusal:\n{output[-4000:]}"
    for path in results:
        recorded = json.loads(path.read_text())
        assert recorded["status"] == "failed", recorded
        assert "Traceback" not in recorded["error"] and recorded["error"].startswith(("ConfigError", "DataError"))
    if not multirun:
        assert done.returncode != 0
        assert recorded["error"].split(": ", 1)[-1] in output
