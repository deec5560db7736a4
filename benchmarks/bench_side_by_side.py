"""Benchmark: two tiny SFT jobs at the same time against the same two back to back, on this machine's cores.

    python -m benchmarks.bench_side_by_side [--steps 40] [--arrangements sweep,independent,independent_split,...]

What a sweep with a parallel launcher does, and what a laptop does while its owner works. Arrangements (all by
default):
- sweep: `python src/run.py -m hydra/launcher=submitit_local seed=1,2 ...` runs both jobs at once, each in its own
  process; back to back is the same sweep with hydra.sweeper.max_batch_size=1 (one job after the other).
- independent: two `python src/run.py` single runs started together (neither knows of the other), against the same
  two run one after the other; independent_split: the same, each run started with its half of the cores
  (cpu.threads=1 on 2 cores), what a user starting two runs by hand does.
- alone: what waiting without spinning (cpu.wait_policy=passive, the default) costs one job alone, against libgomp's
  default (cpu.wait_policy=null: spin ~3 ms at each barrier). Meaningful on an idle machine only.
- steps: the cause, without a job around it: seconds and CPU seconds per tiny_learner training step (batch 8 x 400
  tokens) with 2 spinning threads (libgomp's default), 2 sleeping ones (OMP_WAIT_POLICY=PASSIVE) or 1 thread; one
  process alone, then two at once. Spinning shows as CPU time per step far above the work's.
Each job: SFT of tiny_learner for --steps steps (stage.sft.cache=false, so every job trains), then a 2-item
evaluation. Reported per arrangement and mode: wall seconds, CPU seconds the jobs used (getrusage of the finished
children: threads spinning on each other show here as CPU time well above the useful work), each job's SFT seconds
and torch threads (results.json), and the 1-minute load average sampled through the run (the machine's other work
competes too: compare runs at similar load). Target: side by side <= 1.1 x back to back where the jobs are told their
share of the cores (sweep, independent_split); jobs that do not know of each other (independent) are reported only.
To measure the code before a change, run this file from a checkout of that change's parent with
PYTHONPATH=<checkout>/src:<checkout> (every job imports medgrpo from there).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._common import write_result

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.1
TARGETED = ("sweep", "independent_split")  # the arrangements whose jobs know their share of the cores
ENV = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def job_overrides(steps: int, cache: Path) -> list[str]:
    return ["preset=tiny", "model=tiny_learner", "lora=full", "stage=sft", "stage.sft.cache=false",
            f"stage.sft.trainer.max_steps={steps}", "stage.sft.trainer.logging_steps=10", "eval.limit=2",
            "eval.max_new_tokens=16", "logger=disabled", f"paths.cache_dir={cache}"]


class LoadSampler:
    """The 1-minute load average every 2 s while a run lasts: its mean and max, and the value at the start."""

    def __init__(self):
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(2.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return {"at_start": round(self.samples[0], 2), "mean": round(statistics.mean(self.samples), 2),
                "max": round(max(self.samples), 2)}


def start(args: list[str], log: Path) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen([sys.executable, str(ROOT / "src" / "run.py"), *args], cwd=ROOT,
                            env={**os.environ, **ENV}, stdout=handle, stderr=subprocess.STDOUT)


def wait_all(processes: list[subprocess.Popen], logs: list[Path]) -> None:
    for process, log in zip(processes, logs):
        if process.wait() != 0:
            raise RuntimeError(f"job failed (exit {process.returncode}):\n{log.read_text()[-3000:]}")


def measure(run, folder: Path, jobs_expected: int = 2) -> dict:
    """Wall and CPU seconds of run(folder) (CPU: all children it waited for), the load through it, and the jobs'
    own results.json figures."""
    folder.mkdir(parents=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    with LoadSampler() as load:
        run(folder)
    wall = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    jobs = [json.loads(path.read_text()) for path in sorted(folder.rglob("results.json"))]
    if len(jobs) != jobs_expected or any(job["status"] != "ok" for job in jobs):
        raise RuntimeError(f"expected {jobs_expected} jobs ok under {folder}, got {[job.get('error') for job in jobs]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load": load.summary(),
            "sft_s": [round(job["timings"]["sft_s"], 1) for job in jobs],
            "torch_threads": [job.get("cpu", {}).get("torch_threads") for job in jobs]}


def sweep(steps: int, cache: Path, at_once: bool):
    def run(folder: Path) -> None:
        batch = [] if at_once else ["hydra.sweeper.max_batch_size=1"]
        log = folder / "sweep.log"
        wait_all([start(["-m", "hydra/launcher=submitit_local", "seed=1,2", *batch, *job_overrides(steps, cache),
                         f"hydra.sweep.dir={folder / 'sweep'}"], log)], [log])
    return run


def independent(steps: int, cache: Path, at_once: bool, split: bool = False):
    """Two single runs; split: side by side, each told its half of the cores (cpu.threads), as a user would."""
    threads = [f"cpu.threads={max(1, len(os.sched_getaffinity(0)) // 2)}"] if split and at_once else []

    def run(folder: Path) -> None:
        processes, logs = [], []
        for seed in (1, 2):
            logs.append(folder / f"job{seed}.log")
            processes.append(start([f"seed={seed}", *threads, *job_overrides(steps, cache),
                                    f"hydra.run.dir={folder / f'job{seed}'}"], logs[-1]))
            if not at_once:
                wait_all(processes[-1:], logs[-1:])
        wait_all(processes, logs)
    return run


def alone(steps: int, cache: Path, wait_policy: str):
    def run(folder: Path) -> None:
        log = folder / "job.log"
        wait_all([start([f"cpu.wait_policy={wait_policy}", *job_overrides(steps, cache),
                         f"hydra.run.dir={folder / 'job'}"], log)], [log])
    return run


STEP_SETTINGS = {"2_threads_spinning": (2, None), "2_threads_passive": (2, "PASSIVE"), "1_thread": (1, "PASSIVE")}


def step_probe(threads: int, steps: int) -> None:
    """In a child process: time `steps` training steps of the tiny_learner architecture (random weights, random
    tokens) and print seconds and CPU seconds per step as JSON."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from medgrpo.tiny import ARCHITECTURES

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=2048, **ARCHITECTURES["tiny_learner"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, 2048, (8, 400))

    def step() -> None:
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up
    begin, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        step()
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end.ru_utime - used.ru_utime) + (end.ru_stime - used.ru_stime)
    print(json.dumps({"s_per_step": (time.perf_counter() - begin) / steps, "cpu_s_per_step": cpu / steps}))


def steps_arrangement(steps: int) -> dict:
    """Each thread setting alone, then two processes at once, each with the load average through it."""
    result = {}
    for processes in (1, 2):
        for name, (threads, wait_policy) in STEP_SETTINGS.items():
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
            env.update({"OMP_WAIT_POLICY": wait_policy} if wait_policy else {})
            with LoadSampler() as load:
                children = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_side_by_side", "--step-probe",
                                              str(threads), "--probe-steps", str(steps)], cwd=ROOT, env=env,
                                             stdout=subprocess.PIPE, text=True) for _ in range(processes)]
                outputs = [json.loads(child.communicate()[0]) for child in children]
            result[f"{name}_x{processes}"] = {
                "s_per_step": [round(o["s_per_step"], 3) for o in outputs],
                "cpu_s_per_step": [round(o["cpu_s_per_step"], 3) for o in outputs], "load": load.summary()}
            print(name, processes, json.dumps(result[f"{name}_x{processes}"]), flush=True)
    return result


def compare(name: str, steps: int, cache: Path, work: Path) -> dict:
    """Both modes of one arrangement, measured one after the other, and the ratio of their wall times."""
    if name == "alone":
        modes = {"libgomp_default": alone(steps, cache, "null"), "passive": alone(steps, cache, "passive")}
        ratio_name, jobs = "ratio_passive_over_libgomp_default", 1
    else:
        arrangement = {"sweep": sweep, "independent": independent,
                       "independent_split": lambda *a, **k: independent(*a, **k, split=True)}[name]
        modes = {"back_to_back": arrangement(steps, cache, at_once=False),
                 "side_by_side": arrangement(steps, cache, at_once=True)}
        ratio_name, jobs = "ratio_side_by_side_over_back_to_back", 2
    result = {mode: measure(run, work / name / mode, jobs) for mode, run in modes.items()}
    first, second = result.values()
    return {**result, ratio_name: round(second["wall_s"] / first["wall_s"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40, help="SFT steps per job")
    parser.add_argument("--arrangements", default="sweep,independent,independent_split,alone,steps")
    parser.add_argument("--probe-steps", type=int, default=10, help="training steps per process in `steps`")
    parser.add_argument("--step-probe", type=int, default=None, help=argparse.SUPPRESS)  # a child of `steps`
    args = parser.parse_args()
    if args.step_probe is not None:
        return step_probe(args.step_probe, args.probe_steps)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-side-by-side-") as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        arrangements = args.arrangements.split(",")
        if set(arrangements) - {"steps"}:  # the tiny model, tokenizer and prepared data, built outside the timings
            warmup = work / "warmup.log"
            wait_all([start([*job_overrides(1, cache), f"hydra.run.dir={work / 'warmup'}"], warmup)], [warmup])
        for name in arrangements:
            results[name] = steps_arrangement(args.probe_steps) if name == "steps" else \
                compare(name, args.steps, cache, work)
            print(name, json.dumps(results[name]), flush=True)
    ratios = [results[name]["ratio_side_by_side_over_back_to_back"] for name in TARGETED if name in results]
    write_result("side_by_side", {
        "target_ratio": TARGET_RATIO,
        "meets_target": all(ratio <= TARGET_RATIO for ratio in ratios),
        **results,
        "settings": {"steps": args.steps, "probe_steps": args.probe_steps,
                     "job": job_overrides(args.steps, Path("<cache>")),
                     "environment": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}},
    })


if __name__ == "__main__":
    main()
