"""Benchmark: LLM-judge throughput against the local test judge (tests/judge_server.py) with injected latency.

    python -m benchmarks.bench_judge [--latency-ms 50] [--repeats 5] [--out benchmarks/results/judge.json]

Targets: a GRPO batch of 16 prompts x 8 completions (128 distinct items, conf/judge/deepseek.yaml's concurrency)
is scored in <= 3x the latency of one call, measured side by side with the same batch scored one call at a time
(the baseline a sequential reward function gives); the SQLite cache answers >= 10,000 lookups/s. The server runs
in its own process so that it does not share the client's interpreter lock.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from benchmarks._common import write_result
from medgrpo.config import CONF_DIR
from medgrpo.judge import Judge, JudgeSettings, VerdictCache, cache_key

ROOT = Path(__file__).resolve().parents[1]

PROMPTS, GENERATIONS = 16, 8
BATCH_TARGET_X, LOOKUPS_TARGET = 3.0, 10_000
KEY = "sk-bench-local"


def batch(tag: str) -> tuple[list[str], list[str], list[str]]:
    """16 questions x 8 distinct completions of realistic length (about 600 characters)."""
    questions, completions = [], []
    for p in range(PROMPTS):
        for g in range(GENERATIONS):
            questions.append(f"Patient {p}: chest tightness for {p + 1} days after exercise. What should I do?")
            completions.append(f"<think>Case {tag}-{p}-{g}: exertional symptoms need a cardiac work-up.</think>"
                               + " I understand this is worrying. See a doctor soon; call emergency services if the"
                                 " pain spreads to the arm or jaw, or comes with sweating." * 4)
    return questions, completions, ["See a doctor; emergency care for red flags."] * len(questions)


async def timed_score(judge: Judge, questions, completions, references, cpu: list | None = None) -> float:
    start, start_cpu = time.perf_counter(), time.process_time()
    scores = await judge.score(questions, completions, references)
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    assert all(score is not None for score in scores), judge.last_error
    return elapsed


async def measure(settings: JudgeSettings, repeats: int) -> dict:
    """All on one event loop, as under TRL (async rewards run on its one long-lived loop)."""
    judge = Judge(settings, KEY)
    await timed_score(judge, *batch("warmup"))  # connections opened once, as after a job's first step
    single = [await timed_score(judge, *(column[:1] for column in batch(f"single{i}"))) for i in range(10)]
    cpu: list[float] = []  # the client's own CPU time per batch: what a busy machine cannot hide
    concurrent = [await timed_score(judge, *batch(f"batch{i}"), cpu=cpu) for i in range(repeats)]
    sequential_judge = Judge(replace(settings, concurrency=1), KEY, cache=judge.cache)
    sequential = await timed_score(sequential_judge, *batch("sequential"))
    await sequential_judge.aclose()
    cached = min([await timed_score(judge, *batch("batch0")) for _ in range(5)])  # a re-run: all from the cache
    await judge.aclose()
    return {"single": single, "concurrent": concurrent, "cpu": cpu, "sequential": sequential, "cached": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "judge_server.py"), "--latency-ms",
                               str(args.latency_ms), "--key", KEY], stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "judge" / "deepseek.yaml"))
            raw.update(base_url=base_url, cache_path=str(Path(tmp) / "judge.sqlite"))
            settings = JudgeSettings.from_config(raw)
            timings = asyncio.run(measure(settings, args.repeats))

            cache = VerdictCache(Path(tmp) / "lookups.sqlite")
            keys = [cache_key("m", "v", f"question {i}", "ref", f"completion {i}") for i in range(10_000)]
            cache.put_many({key: {"safety": 5, "logic": 5, "completeness": 5, "empathy": 5, "rationale": "x"}
                            for key in keys})
            start = time.perf_counter()
            hits = sum(cache.get(key) is not None for key in keys)
            lookups_per_s = hits / (time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(timeout=10)

    one_call = statistics.median(timings["single"])
    batch_s = statistics.median(timings["concurrent"])
    sequential, cached_batch_s = timings["sequential"], timings["cached"]
    result = {
        "command": "python -m benchmarks.bench_judge " + " ".join(sys.argv[1:]),
        "injected_latency_ms": args.latency_ms,
        "batch": f"{PROMPTS} prompts x {GENERATIONS} completions",
        "concurrency": settings.concurrency,
        "one_call_latency_s": round(one_call, 4),
        "batch_s_median": round(batch_s, 4),
        "batch_s_all": [round(value, 4) for value in timings["concurrent"]],
        "batch_client_cpu_s_median": round(statistics.median(timings["cpu"]), 4),
        "batch_over_one_call": round(batch_s / one_call, 2),
        "target_batch_over_one_call": BATCH_TARGET_X,
        "baseline_sequential_batch_s": round(sequential, 3),
        "speedup_over_sequential": round(sequential / batch_s, 1),
        "cache_lookups_per_s": round(lookups_per_s),
        "target_cache_lookups_per_s": LOOKUPS_TARGET,
        "cached_batch_s": round(cached_batch_s, 4),
        "cached_items_per_s": round(PROMPTS * GENERATIONS / cached_batch_s),
        "batch_target_met": batch_s <= BATCH_TARGET_X * one_call,
        "cache_target_met": lookups_per_s >= LOOKUPS_TARGET,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    write_result("judge", result, args.out)
    if not (result["batch_target_met"] and result["cache_target_met"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
