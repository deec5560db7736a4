"""Benchmark: a 12-trial tiny Optuna study run by 2 sweeper processes sharing it, against 1 sweeper, on this machine.

    python -m benchmarks.bench_sweep [--trials 12]

Both studies live in one throwaway PostgreSQL server (Debian's binaries, started on 127.0.0.1 as the tests do),
same search space, same tiny jobs (hparams_search=smoke_optuna, 1 GRPO step, 2 eval items). Reports the wall
times, their ratio (2 sweepers / 1: below 1 means sharing a study pays on this machine's cores), and how many
trials repeated another trial's parameters (the learning rate is continuous, so any repeat is a race or a
replayed random stream; must be 0). Exits 3 (skipped) without PostgreSQL server binaries.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import optuna

from benchmarks._common import SKIPPED, write_result
from tests.test_postgres import postgres_bin, postgres_server, start_sweeper

JOB = ["grpo.max_steps=1", "eval.limit=2"]


def run_study(processes: int, trials: int, study: str, url: str, work: Path) -> float:
    """Wall seconds for `processes` sweepers sharing `trials` trials of one study."""
    start = time.perf_counter()
    sweepers = [start_sweeper(work / f"{study}_{i}", work / "cache", *JOB, f"hydra.sweeper.study_name={study}",
                              f"hydra.sweeper.storage={url}", f"hydra.sweeper.n_trials={trials // processes}")
                for i in range(processes)]
    for sweeper in sweepers:
        output, _ = sweeper.communicate(timeout=3600)
        if sweeper.returncode != 0:
            raise RuntimeError(f"sweeper failed:\n{output[-3000:]}")
    return time.perf_counter() - start


def duplicates(study: str, url: str) -> int:
    params = [tuple(sorted(t.params.items())) for t in optuna.load_study(study_name=study, storage=url).trials]
    return len(params) - len(set(params))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    if postgres_bin() is None:
        print("skipped: no PostgreSQL server binaries (apt-get install -y postgresql)")
        return SKIPPED
    with postgres_server() as url, tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        run_study(1, 1, "warmup", url, work)  # builds the tiny model and the data cache outside the timings
        one = run_study(1, args.trials, "one_sweeper", url, work)
        two = run_study(2, args.trials, "two_sweepers", url, work)
        counts = {name: len(optuna.load_study(study_name=name, storage=url).trials)
                  for name in ("one_sweeper", "two_sweepers")}
        repeats = {name: duplicates(name, url) for name in ("one_sweeper", "two_sweepers")}
    write_result("sweep", {
        "trials": args.trials, "job": JOB,
        "wall_s": {"one_sweeper": round(one, 1), "two_sweepers": round(two, 1)},
        "ratio_two_over_one": round(two / one, 3),
        "trials_stored": counts, "duplicate_parameter_sets": repeats,
    })
    return 0 if sum(repeats.values()) == 0 and set(counts.values()) == {args.trials} else 1


if __name__ == "__main__":
    sys.exit(main())
