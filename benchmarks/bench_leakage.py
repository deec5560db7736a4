"""Benchmark: the leakage check of a default-mix-sized training set (~226k rows) against default-sized
evaluation sets (8,864 items), with and without the near-duplicate check (MinHash LSH, datasketch).

    python -m benchmarks.bench_leakage [--train-rows 226100] [--threshold 0.6] [--out benchmarks/results/leakage.json]

The full hub pools cannot be downloaded here, so the text is made from the bundled real data (data/samples):
training rows splice two real training questions (PubMedQA pool, GSM8K train) and swap ~10% of the words, in
the default mix's shapes (211,269 short PubMedQA-like questions, 7,473 GSM8K-like problems, 7,358 multiple-choice
items with four options); evaluation items are the real bundled test items plus splices of them, padded to the
default's set sizes. 300 real evaluation items are planted in training with one word changed (and, for
multiple choice, the options reversed): the benchmark reports how many the check finds (recall) beside its time.
Baseline, side by side: the same call with the near-duplicate check off (ids and exact normalised text only).
Target (issue 11): <= 30 s on 2 cores with the near-duplicate check.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from benchmarks._common import write_result
from medgrpo.data.leakage import check_leakage, jaccard, shingles

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
# data=default's evaluation sets and their sizes
EVAL_SIZES = {"pubmedqa": 1000, "mmlu_medical": 1089, "medmcqa": 4183, "medqa": 1273, "gsm8k": 1319}
TRAIN_SHAPES = {"pubmedqa_artificial": 211_269, "gsm8k_train": 7_473, "health_benchmarks": 7_358}
PLANTED = 300
TARGET_S = 30


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished child processes (the forked workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Splicer:
    """New text from real text: the head of one question, the tail of another, ~10% of the words swapped."""

    def __init__(self, texts: list[str], rng: random.Random):
        self.words = [t.split() for t in texts]
        self.vocabulary = sorted({w for words in self.words for w in words})
        self.rng = rng

    def __call__(self) -> str:
        a, b = self.rng.sample(self.words, 2)
        head = a[: self.rng.randint(len(a) // 3, max(len(a) // 3, 2 * len(a) // 3))]
        out = head + b[self.rng.randint(len(b) // 3, max(len(b) // 3, 2 * len(b) // 3)):]
        for _ in range(max(1, len(out) // 10)):
            out[self.rng.randrange(len(out))] = self.rng.choice(self.vocabulary)
        return " ".join(out)


def columns(source: str, rows: list[tuple[str, list[str]]]) -> dict[str, list]:
    return {"id": [f"{source}:{i}" for i in range(len(rows))], "source": [source] * len(rows),
            "question": [q for q, _ in rows], "choices": [c for _, c in rows]}


def build(train_rows: int, seed: int = 0) -> tuple[dict, dict, list[tuple[str, str]]]:
    """(train columns, {eval set: columns}, planted (eval id, train id) pairs)."""
    rng = random.Random(seed)
    pubmed_pool = [r["question"] for r in read(SAMPLES / "pubmedqa" / "pqa_labeled_pool.jsonl")]
    gsm_train = [r["question"] for r in read(SAMPLES / "gsm8k" / "train.jsonl")]
    real_eval = {"pubmedqa": [(r["question"], []) for r in read(SAMPLES / "pubmedqa" / "pqa_labeled_test.jsonl")],
                 "gsm8k": [(r["question"], []) for r in read(SAMPLES / "gsm8k" / "test.jsonl")],
                 "mmlu_medical": [(r["question"], r["choices"]) for r in read(SAMPLES / "mmlu_medical" / "test.jsonl")]}
    short, long_ = Splicer(pubmed_pool, rng), Splicer(gsm_train, rng)
    option_text = Splicer(pubmed_pool + gsm_train, rng)
    scale = train_rows / sum(TRAIN_SHAPES.values())
    train = {"pubmedqa_artificial": [(short(), []) for _ in range(round(TRAIN_SHAPES["pubmedqa_artificial"] * scale))],
             "gsm8k_train": [(long_(), []) for _ in range(round(TRAIN_SHAPES["gsm8k_train"] * scale))],
             "health_benchmarks": [(short(), [" ".join(option_text().split()[:6]) for _ in range(4)])
                                   for _ in range(round(TRAIN_SHAPES["health_benchmarks"] * scale))]}
    evals = {}
    eval_texts = Splicer([q for rows in real_eval.values() for q, _ in rows], rng)
    for name, size in EVAL_SIZES.items():
        real = real_eval.get(name, [])
        with_options = name in ("mmlu_medical", "medmcqa", "medqa")
        made = [(eval_texts(), [" ".join(eval_texts().split()[:5]) for _ in range(4)] if with_options else [])
                for _ in range(size - len(real))]
        evals[name] = columns(name, real + made)
    merged = {k: [v for name, rows in train.items() for v in columns(name, rows)[k]]
              for k in ("id", "source", "question", "choices")}
    planted = []
    for k in range(PLANTED):
        name = list(real_eval)[k % len(real_eval)]
        index = k // len(real_eval)
        question, choices = real_eval[name][index]
        words = question.split()
        words[rng.randrange(len(words))] = "changed"
        row = {"id": f"planted:{k}", "source": "planted", "question": " ".join(words),
               "choices": list(reversed(choices))}
        for key, value in row.items():
            merged[key].append(value)
        similarity = jaccard(shingles(question, choices), shingles(row["question"], choices))
        planted.append((evals[name]["id"][index], row["id"], similarity))
    return merged, evals, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=sum(TRAIN_SHAPES.values()))
    parser.add_argument("--threshold", type=float, default=0.6, help="data.leakage.near_duplicate_threshold")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/leakage.json")
    args = parser.parse_args()

    started = time.perf_counter()
    train, evals, planted = build(args.train_rows)
    synth_s = time.perf_counter() - started
    timings = {}
    reports = {}
    cpu = {}
    for name, threshold in (("exact_only", None), ("with_near_duplicates", args.threshold)):
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        reports[name] = check_leakage(train, evals, allow=True, near_duplicate_threshold=threshold)
        timings[name] = round(time.perf_counter() - started, 2)
        cpu[name] = round(_cpu_seconds() - cpu_started, 2)
        print(f"{name}: {timings[name]:.1f} s ({cpu[name]:.1f} CPU s), {reports[name]['overlap']} eval items flagged",
              flush=True)
    near = reports["with_near_duplicates"]["near_duplicates"]
    reachable = [(e, t) for e, t, similarity in planted if similarity >= args.threshold]
    found = {(p["eval"], p["train"]) for p in near["pairs"]}
    recall = sum(pair in found for pair in reachable) / len(reachable) if reachable else None
    result = {
        "description": "leakage check of a default-mix-sized training set against default-sized eval sets",
        "train_rows": len(train["id"]), "eval_items": {n: len(c["id"]) for n, c in evals.items()},
        "threshold": args.threshold, "timings_s": timings,
        # CPU seconds of this process and its workers: what the check costs whatever else the machine runs;
        # on 2 otherwise idle cores the wall time is about half of it plus the serial index build
        "cpu_s": cpu,
        "near_duplicate_overhead_s": round(timings["with_near_duplicates"] - timings["exact_only"], 2),
        "planted": len(planted), "planted_at_or_above_threshold": len(reachable), "planted_found": recall,
        "pairs_found": near["pairs_found"], "method": near["method"],
        "target_s": TARGET_S, "meets_target": timings["with_near_duplicates"] <= TARGET_S,
        "synthesis_s": round(synth_s, 1),
        "load_average_1min_after": round(os.getloadavg()[0], 2),  # other work on the machine slows the timing
        "text": "bundled data/samples questions, spliced and perturbed to the default mix's sizes",
    }
    write_result("leakage", result, args.out)


if __name__ == "__main__":
    main()
