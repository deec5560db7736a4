"""`make bench`: run every benchmarks/bench_*.py with its defaults; each writes benchmarks/results/<name>.json.

    python -m benchmarks.run_all [--only grade,eval] [--gpu-python PYTHON]

Prints one line per benchmark (a skipped one with its reason) and exits non-zero if any of them failed.
Benchmarks check performance targets; tests never time anything. On a machine with an NVIDIA GPU, bench_gpu runs
under --gpu-python (the environment `make install-gpu` fills: CUDA torch, unsloth, vllm); the others, and bench_gpu
on a machine without a GPU (it says it skipped), under this interpreter.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import SKIPPED
from benchmarks.bench_gpu import gpu_present

HERE = Path(__file__).resolve().parent


def interpreter(benchmark: str, gpu_python: str) -> str:
    return gpu_python if benchmark == "bench_gpu" and gpu_present() else sys.executable


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=None, help="comma-separated names, e.g. grade,overhead")
    parser.add_argument("--gpu-python", default=sys.executable, help="the interpreter bench_gpu runs under on a "
                        "GPU machine (default: this one)")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = set(args.only.split(","))
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    failed = []
    for script in scripts:
        start = time.perf_counter()
        python = interpreter(script.stem, args.gpu_python)
        if shutil.which(python) is None:
            done = subprocess.CompletedProcess([], 127, "", f"{python}: no such interpreter (--gpu-python)")
        else:
            done = subprocess.run([python, "-m", f"benchmarks.{script.stem}"], cwd=HERE.parent, capture_output=True,
                                  text=True)
        status = {0: "ok", SKIPPED: "SKIPPED"}.get(done.returncode, f"FAILED (exit {done.returncode})")
        print(f"{script.stem:20s} {status:20s} {time.perf_counter() - start:7.1f} s")
        if done.returncode == SKIPPED:  # measured nothing here: say why, instead of passing as if measured
            print(f"    {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'no reason given'}")
        elif done.returncode != 0:
            failed.append(script.stem)
            print(done.stderr[-3000:], file=sys.stderr)
    print(f"results in {HERE / 'results'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
