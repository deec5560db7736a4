"""Benchmark: LLM-judge throughput against the local test judge (tests/judge_server.py) with injected latency.

    python -m benchmarks.bench_judge [--latency-ms 50] [--context-latency-ms 0 2000] [--repeats 5]
                                     [--out benchmarks/results/judge.json]

Targets (issue 12): against the server with 50 ms of injected latency, a GRPO batch of 16 prompts x 8 completions
(128 distinct items, conf/judge/deepseek.yaml's concurrency) is scored in <= 3x the latency of one call, measured
side by side with the same batch scored one call at a time (the baseline a sequential reward function gives:
~128x, so a serial or under-concurrent path fails the target); the SQLite cache answers >= 10,000 lookups/s.

At 50 ms the client's own CPU (~0.7 ms per request: the openai SDK, HTTP, the event loop) is a large share of
the batch time, so the ratio also measures this machine's CPU. Two context runs, not judged, show both ends:
- 0 ms: a server that answers at once; the batch time is then CPU only (client and server), so the ratio is
  large and says nothing about concurrency, only about per-request cost;
- 2000 ms: a realistic judge. The ZenMux router's page for deepseek-chat lists a first-token latency of 1.2-2.9 s
  (mean 2.2 s) and ~37 output tokens/s, so a ~80-token verdict takes ~4 s; 2 s is a conservative stand-in.
  There the client's CPU is hidden under the wait and the ratio shows the concurrency.
The server runs in its own process so that it does not share the client's interpreter lock; its CPU time per
batch is reported beside the client's (on 2 cores both compete with whatever else runs: see the load average).
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


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def timed_score(judge: Judge, questions, completions, references, cpu: list | None = None) -> float:
    start, start_cpu = time.perf_counter(), time.process_time()
    scores = await judge.score(questions, completions, references)
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    assert all(score is not None for score in scores), judge.last_error
    return elapsed


async def measure(settings: JudgeSettings, server_pid: int, singles: int, repeats: int, baseline: bool) -> dict:
    """All on one event loop, as under TRL (async rewards run on its one long-lived loop)."""
    judge = Judge(settings, KEY)
    await timed_score(judge, *batch("warmup"))  # connections opened once, as after a job's first step
    single = [await timed_score(judge, *(column[:1] for column in batch(f"single{i}"))) for i in range(singles)]
    cpu: list[float] = []  # the client's own CPU time per batch: what a busy machine cannot hide
    server_cpu = process_cpu_s(server_pid)
    concurrent = [await timed_score(judge, *batch(f"batch{i}"), cpu=cpu) for i in range(repeats)]
    timings = {"single": single, "concurrent": concurrent, "cpu": cpu,
               "server_cpu": (process_cpu_s(server_pid) - server_cpu) / repeats}
    if baseline:
        sequential_judge = Judge(replace(settings, concurrency=1), KEY, cache=judge.cache)
        timings["sequential"] = await timed_score(sequential_judge, *batch("sequential"))
        await sequential_judge.aclose()
        timings["cached"] = min([await timed_score(judge, *batch("batch0")) for _ in range(5)])  # a re-run
    await judge.aclose()
    return timings


def run_against_server(latency_ms: float, cache_dir: Path, singles: int, repeats: int, baseline: bool) -> dict:
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "judge_server.py"), "--latency-ms",
                               str(latency_ms), "--key", KEY], stdout=subprocess.PIPE, text=True)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "judge" / "deepseek.yaml"))
        raw.update(base_url=server.stdout.readline().strip(), cache_path=str(cache_dir / f"judge-{latency_ms}.sqlite"))
        settings = JudgeSettings.from_config(raw)
        timings = asyncio.run(measure(settings, server.pid, singles, repeats, baseline))
    finally:
        server.terminate()
        server.wait(timeout=10)
    one_call, batch_s = statistics.median(timings["single"]), statistics.median(timings["concurrent"])
    summary = {"injected_latency_ms": latency_ms, "concurrency": settings.concurrency,
               "one_call_latency_s": round(one_call, 4), "batch_s_median": round(batch_s, 4),
               "batch_s_all": [round(value, 4) for value in timings["concurrent"]],
               "batch_client_cpu_s_median": round(statistics.median(timings["cpu"]), 4),
               "batch_server_cpu_s_mean": round(timings["server_cpu"], 3),
               "batch_over_one_call": round(batch_s / one_call, 2)}
    if baseline:
        sequential = timings["sequential"]
        summary.update(baseline_sequential_batch_s=round(sequential, 3),
                       sequential_over_one_call=round(sequential / one_call, 1),
                       speedup_over_sequential=round(sequential / batch_s, 1),
                       cached_batch_s=round(timings["cached"], 4),
                       cached_items_per_s=round(PROMPTS * GENERATIONS / timings["cached"]))
    return summary


def cache_lookups_per_s(cache_dir: Path) -> float:
    cache = VerdictCache(cache_dir / "lookups.sqlite")
    keys = [cache_key("m", "v", f"question {i}", "ref", f"completion {i}") for i in range(10_000)]
    cache.put_many({key: {"safety": 5, "logic": 5, "completeness": 5, "empathy": 5, "rationale": "x"}
                    for key in keys})
    start = time.perf_counter()
    hits = sum(cache.get(key) is not None for key in keys)
    lookups_per_s = hits / (time.perf_counter() - start)
    cache.close()
    return lookups_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the judged run (issue 12: 50 ms)")
    parser.add_argument("--context-latency-ms", type=float, nargs="*", default=[0.0, 2000.0],
                        help="runs reported beside it, not judged (see the module docstring)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        judged = run_against_server(args.latency_ms, Path(tmp), singles=10, repeats=args.repeats, baseline=True)
        # Fewer calls at a long latency: each one costs seconds, and the spread there is small.
        context = [run_against_server(latency, Path(tmp), singles=10 if latency < 500 else 3,
                                      repeats=args.repeats if latency < 500 else 3, baseline=False)
                   for latency in args.context_latency_ms]
        lookups_per_s = cache_lookups_per_s(Path(tmp))

    batch_target_met = judged["batch_s_median"] <= BATCH_TARGET_X * judged["one_call_latency_s"]
    result = {
        "command": "python -m benchmarks.bench_judge " + " ".join(sys.argv[1:]),
        "batch": f"{PROMPTS} prompts x {GENERATIONS} completions",
        **judged,
        "target_batch_over_one_call": BATCH_TARGET_X,
        "cache_lookups_per_s": round(lookups_per_s),
        "target_cache_lookups_per_s": LOOKUPS_TARGET,
        "batch_target_met": batch_target_met,
        "cache_target_met": lookups_per_s >= LOOKUPS_TARGET,
        "context_runs_not_judged": context,
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    write_result("judge", result, args.out)
    if not (result["batch_target_met"] and result["cache_target_met"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
