"""Optuna on a real PostgreSQL server: two sweeper processes share one study, and the ablation table and Optuna
plots read it back from the database. The server comes from Debian's postgresql package (.ci/run installs it);
postgres_server() initdb's a throwaway cluster, starts it on 127.0.0.1 on a free port and stops it afterwards."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from tests._run import ROOT, main_table_rows, run_module
from tests.test_sweeps import job_dirs

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
TINY_JOB = ["grpo.max_steps=1", "eval.limit=2"]
# A continuous learning rate: two trials with the same value can only come from a replayed random stream.
# lora.rank=0 fails validation at once: the failed trials the study must record.
SPACE = 'hydra.sweeper.params={grpo.learning_rate:"tag(log, interval(1e-5, 1e-3))",lora.rank:"choice(0,4)"}'


def postgres_bin() -> Path | None:
    """Debian's server binaries: /usr/lib/postgresql/<version>/bin (the newest version installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_server():
    """A PostgreSQL server for the duration of the block; yields the URL of its database `optuna`.
    postgres refuses to run as root: as root, the cluster belongs to the `postgres` user the package created."""
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/pg_ctl: apt-get install -y postgresql (see .ci/run)")
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="medgrpo-pg-"))
    if as_owner:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_owner, *command], check=True, capture_output=True, text=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "medgrpo", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "medgrpo", "optuna")
        yield f"postgresql+psycopg2://medgrpo@127.0.0.1:{port}/optuna"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    if postgres_bin() is None:
        message = "PostgreSQL server binaries absent (apt-get install -y postgresql): Optuna-on-PostgreSQL NOT TESTED"
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)
    with postgres_server() as url:
        yield url


def start_sweeper(sweep: Path, cache: Path, *overrides: str) -> subprocess.Popen:
    """`python src/run.py -m hparams_search=smoke_optuna ...` in the background (W&B offline)."""
    command = [sys.executable, str(ROOT / "src" / "run.py"), "-m", "hparams_search=smoke_optuna", *TINY_JOB,
               f"hydra.sweep.dir={sweep}", f"paths.cache_dir={cache}", *overrides]
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.scale
def test_two_sweepers_share_one_study_in_postgresql(postgres_url, tmp_path, model_cache):
    machines = [tmp_path / "machine0", tmp_path / "machine1"]  # one sweep folder per machine, one study
    sweepers = [start_sweeper(sweep, model_cache.parent, SPACE, "hydra.sweeper.n_trials=3",
                              f"hydra.sweeper.storage={postgres_url}") for sweep in machines]
    for sweeper in sweepers:
        output, _ = sweeper.communicate(timeout=600)
        assert sweeper.returncode == 0, output[-4000:]

    trials = optuna.load_study(study_name="tiny", storage=postgres_url).trials
    assert len(trials) == 6  # 3 + 3 requested
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no parameter set ran twice
    states = {t.params["lora.rank"]: set() for t in trials}
    for trial in trials:
        states[trial.params["lora.rank"]].add(trial.state)
    assert states == {0: {FAIL}, 4: {COMPLETE}}  # failed trials are recorded as FAIL, the others complete
    numbers = sorted(int(job.name.split("_")[0]) for sweep in machines for job in job_dirs(sweep))
    assert numbers == [t.number for t in trials] == list(range(6))  # job N ran trial N, on one machine or the other
    assert all(job_dirs(sweep) for sweep in machines)  # both sweepers ran trials

    merged = run_module("analysis.ablation_table", "--sweep", *map(str, machines), "--metrics", "train/reward")
    assert merged.returncode == 0, merged.stderr
    assert "Optuna study `tiny`" in merged.stdout and "FAIL: " in merged.stdout
    assert (machines[0] / "ablation" / "optuna_history.png").is_file()
    assert len(main_table_rows(merged.stdout)) == 6

    out = tmp_path / "from-database"
    from_db = run_module("analysis.ablation_table", "--study", "tiny", "--storage", postgres_url, "--out", str(out),
                         "--metrics", "train/reward")
    assert from_db.returncode == 0, from_db.stderr
    # The same jobs, found through the database (which row is the baseline may differ with the reading order).
    settings = lambda text: sorted(row.split("|")[1].replace("**baseline**", "").strip()  # noqa: E731
                                   for row in main_table_rows(text))
    assert settings(from_db.stdout) == settings(merged.stdout)
    assert {"optuna_history.png", "optuna_importances.png"} <= {p.name for p in out.iterdir()}
