"""Benchmark: grading throughput on one core for realistic completions of mixed answer types.

    python -m benchmarks.bench_grade [--completions 20000] [--repeats 5] [--out benchmarks/results/grade.json]

Two corpora:
- built: from the bundled real data (data/samples: GSM8K, PubMedQA, MMLU medical), reasoning written from each
  item's own solution, contexts or options, padded to 1-2 KB, then answered the way models answer: mostly a
  correct or wrong <answer> block in various notations, some answers outside the format (lenient path), some
  without any tags (statement, opening-answer and conclusion fallbacks), JSON and Markdown-heading answers,
  some hedges, double blocks and made-up follow-up questions;
- real: every completion of tests/data/real_outputs.jsonl (published outputs of real models; JSON, Markdown,
  chain-of-thought, degenerate repeats), graded in turn.
It reports grade() throughput on each (target: >= 20,000 completions/s on one core), the throughput of the
recipe's five reward functions, and how often the grader agrees with how each built completion was made (should
be 100%). Rates are given per wall-clock second and per CPU second of this process: on a shared machine the CPU
rate is the one-core throughput, the wall rate also counts time other processes took; the target is judged on
the CPU rate, and the load average at the start is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

from benchmarks._common import write_result
from medgrpo.grading import grade
from medgrpo.prompting import PromptFormat
from medgrpo.rewards import build_reward_functions
from tests.test_real_outputs_agreement import rows  # the real-output set, as graded

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
TARGET_PER_SECOND = 20_000
MIN_CHARS, MAX_CHARS = 1000, 2000


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fit(text: str, filler: str) -> str:
    """Pad with filler sentences, then cut, so that the reasoning is between MIN_CHARS and MAX_CHARS - 200."""
    while len(text) < MIN_CHARS:
        text += "\n" + filler
    return text[:MAX_CHARS - 200]


def gsm8k_items() -> list[dict]:
    items = []
    for row in read_jsonl(SAMPLES / "gsm8k" / "test.jsonl"):
        working, final = row["answer"].rsplit("\n####", 1)
        working = re.sub(r"<<[^>]*>>", "", working)  # calculator annotations are not model output
        gold = final.strip().replace(",", "")
        reasoning = fit(f"{row['question']}\nLet's solve it step by step.\n{working}",
                        f"Let me double-check each step.\n{working}")
        items.append({"type": "numeric", "gold": gold, "wrong": str(int(gold) + 3), "reasoning": reasoning,
                      "forms": [gold, f"${gold}", f"{gold} dollars", f"The answer is {gold}.", f"\\boxed{{{gold}}}"],
                      "choices": None, "free": f"{working}\nSo the result is {gold}."})
    return items


def pubmedqa_items() -> list[dict]:
    items = []
    for row in read_jsonl(SAMPLES / "pubmedqa" / "pqa_labeled_test.jsonl"):
        gold = row["final_decision"]
        wrong = {"yes": "no", "no": "yes", "maybe": "no"}[gold]
        contexts = " ".join(row["context"]["contexts"])
        reasoning = fit(f"The question: {row['question']}\n{contexts[:900]}\n{row['long_answer']}",
                        "The study design and the reported effect sizes support this reading.")
        items.append({"type": "yesno", "gold": gold, "wrong": wrong, "reasoning": reasoning,
                      "forms": [gold, gold.capitalize(), f"{gold.capitalize()}.", f"Answer: {gold}", gold.upper()],
                      "choices": None, "free": f"{row['long_answer']}\nTherefore, {gold}."})
    return items


def mmlu_items() -> list[dict]:
    items = []
    for row in read_jsonl(SAMPLES / "mmlu_medical" / "test.jsonl"):
        letters = "ABCD"[:len(row["choices"])]
        gold = letters[row["answer"]]
        wrong = letters[(row["answer"] + 1) % len(letters)]
        text = row["choices"][row["answer"]]
        discussion = "\n".join(f"Option {letter} ({option}) must be weighed against the clinical picture."
                               for letter, option in zip(letters, row["choices"]))
        reasoning = fit(f"{row['question']}\n{discussion}", "Considering the anatomy and physiology involved.")
        items.append({"type": "choice", "gold": gold, "wrong": wrong, "reasoning": reasoning,
                      "forms": [gold, f"({gold})", f"{gold}. {text}", text, f"The answer is {gold}."],
                      "choices": row["choices"], "free": f"{discussion}\nThe best answer is ({gold})."})
    return items


def completion_for(item: dict, rng: random.Random) -> tuple[str, tuple[bool, bool]]:
    """A completion and the grade it should get: (correct, correct_strict)."""
    think = f"<reasoning>\n{item['reasoning']}\n</reasoning>\n"
    roll = rng.random()
    if roll < 0.55:
        return f"{think}<answer>\n{rng.choice(item['forms'])}\n</answer>", (True, True)
    if roll < 0.70:
        return f"{think}<answer>\n{item['wrong']}\n</answer>", (False, False)
    if roll < 0.78:
        return f"{think}The answer is {item['gold']}.", (True, False)
    if roll < 0.86:
        free = item["free"][-(MAX_CHARS // 2):]
        return f"{item['reasoning'][:MAX_CHARS - len(free) - 1]}\n{free}", (True, False)
    if roll < 0.90:
        return f"{item['reasoning']}\n\n## Final Answer\n{item['gold']}", (True, False)
    if roll < 0.94:
        return f'```json\n{{"reasoning": "{item["reasoning"][:300]}", "answer": "{item["gold"]}"}}\n```', (True, False)
    if roll < 0.97:
        follow_up = f"\n\nQuestion: And the next one?\nAnswer: {item['gold']}"
        return f"{think}The answer is {item['wrong']}.{follow_up}", (False, False)
    hedge = rng.choice([f"<answer>\n{item['gold']} or {item['wrong']}\n</answer>",
                        f"<answer>{item['wrong']}</answer>\n<answer>{item['gold']}</answer>"])
    return think + hedge, (False, False)


def build_corpus(size: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = gsm8k_items() + pubmedqa_items() + mmlu_items()
    corpus = []
    for index in range(size):
        item = items[index % len(items)]
        completion, expected = completion_for(item, rng)
        corpus.append({"completion": completion, "answer": item["gold"], "answer_type": item["type"],
                       "choices": item["choices"], "expected": expected})
    return corpus


def real_corpus() -> list[dict]:
    return [{"completion": row["completion"], "answer": row["answer"], "answer_type": row["answer_type"],
             "choices": row.get("choices")} for row in rows()]


def throughput(corpus: list[dict], repeats: int) -> tuple[list[float], list[float]]:
    """Completions per wall-clock second and per CPU second of this process, one value per repeat."""
    wall_rates, cpu_rates = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for row in corpus:
            grade(row["completion"], row["answer"], row["answer_type"], row["choices"])
        wall_rates.append(len(corpus) / (time.perf_counter() - wall))
        cpu_rates.append(len(corpus) / (time.process_time() - cpu))
    return wall_rates, cpu_rates


def reward_throughput(corpus: list[dict], repeats: int, group: int = 6) -> list[float]:
    """The recipe's five rewards, called per GRPO group of `group` completions as GRPOTrainer calls them
    (completions per CPU second)."""
    funcs, _ = build_reward_functions({"weights": dict.fromkeys(
        ["xml_count", "soft_format", "strict_format", "valid_answer", "correctness"], 1.0)},
        PromptFormat(system="", think_tag="reasoning"))
    batches = [corpus[start:start + group] for start in range(0, len(corpus), group)]
    columns = [{"answer": [r["answer"] for r in batch], "answer_type": [r["answer_type"] for r in batch],
                "choices": [r["choices"] or [] for r in batch]} for batch in batches]
    rates = []
    for _ in range(repeats):
        start = time.process_time()
        for batch, batch_columns in zip(batches, columns):
            completions = [row["completion"] for row in batch]
            for fn in funcs:
                fn(prompts=[None] * len(batch), completions=completions, completion_ids=None, **batch_columns)
        rates.append(len(corpus) / (time.process_time() - start))
    return rates


def agreement(corpus: list[dict]) -> dict:
    disagreements = []
    for row in corpus:
        graded = grade(row["completion"], row["answer"], row["answer_type"], row["choices"])
        if (graded.correct, graded.correct_strict) != row["expected"]:
            disagreements.append(row["completion"][-120:])
    return {"agreement": 1 - len(disagreements) / len(corpus), "examples": disagreements[:5]}


def _lengths(corpus: list[dict]) -> list[int]:
    return [len(row["completion"].encode("utf-8")) for row in corpus]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/grade.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # one core, as the target says
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    load_at_start = os.getloadavg()[0]
    corpus = build_corpus(args.completions, args.seed)
    real = real_corpus()
    wall_rates, cpu_rates = throughput(corpus, args.repeats)
    real_wall_rates, real_cpu_rates = throughput(real * max(1, args.completions // len(real) // 4), args.repeats)
    reward_rates = reward_throughput(corpus, args.repeats)
    cpu_rate, real_cpu_rate = statistics.median(cpu_rates), statistics.median(real_cpu_rates)
    write_result("grade", {
        "target_completions_per_s": TARGET_PER_SECOND,
        "grade_completions_per_s": round(cpu_rate),
        "grade_completions_per_s_runs": [round(rate) for rate in cpu_rates],
        "grade_wall_completions_per_s": round(statistics.median(wall_rates)),
        "real_outputs_completions_per_s": round(real_cpu_rate),
        "real_outputs_wall_completions_per_s": round(statistics.median(real_wall_rates)),
        "meets_target": min(cpu_rate, real_cpu_rate) >= TARGET_PER_SECOND,
        "recipe_rewards_completions_per_s": round(statistics.median(reward_rates)),
        "grader_agrees_with_construction": agreement(corpus),
        "settings": {
            "completions": len(corpus), "repeats": args.repeats, "seed": args.seed,
            "bytes_mean": round(statistics.mean(_lengths(corpus))), "bytes_min": min(_lengths(corpus)),
            "bytes_max": max(_lengths(corpus)),
            "mix": {kind: sum(row["answer_type"] == kind for row in corpus) for kind in ("numeric", "yesno", "choice")},
            "answers": "55% right block, 15% wrong block, 8% after reasoning without block, 8% no tags, "
                       "4% Markdown heading, 4% JSON, 3% wrong answer then a made-up follow-up, 3% hedges / "
                       "double blocks",
            "real_outputs": {"completions": len(real), "bytes_mean": round(statistics.mean(_lengths(real))),
                             "bytes_max": max(_lengths(real))},
            "rate_clock": "CPU seconds of this process (wall-clock rates beside them)",
            "load_average_at_start": round(load_at_start, 2),
            "cores_used": 1,
        },
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
