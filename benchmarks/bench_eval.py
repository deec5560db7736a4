"""Benchmark: evaluation throughput (items/s) of the transformers engine on the tiny model, per budget mode;
with a GPU also vLLM versus transformers on a Qwen2.5-3B-shaped model (see bench_gpu.py).

    python -m benchmarks.bench_eval [--items 100] [--repeats 3]

Uses the bundled PubMedQA test sample, the real prompt rendering, grading and metrics: what a job's evaluation does,
minus writing predictions. The tiny model writes until its token limit, so every item costs the full budget.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmarks._common import write_result
from medgrpo.backends import LoraSpec, load_policy
from medgrpo.config import compose_config
from medgrpo.data import prepare_eval
from medgrpo.evaluation.budget import Budget
from medgrpo.evaluation.engine import HFEngine
from medgrpo.evaluation.evaluate import evaluate
from medgrpo.prompting import PromptFormat

BUDGETS = {"off": [], "cap": ["budget=cap", "budget.max_thinking_tokens=48", "budget.max_answer_tokens=16"],
           "extend": ["budget=extend", "budget.max_thinking_tokens=48", "budget.max_answer_tokens=16",
                      "budget.num_ignore=2"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, overrides in BUDGETS.items():
            cfg = compose_config("preset=tiny", f"eval.limit={args.items}",
                                 f"eval.max_new_tokens={args.max_new_tokens}", *overrides, output_dir=tmp)
            policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora))
            prompt_format = PromptFormat.from_config(cfg.prompt)
            sets, _ = prepare_eval(cfg.data, policy.tokenizer, prompt_format, 1024, limit=args.items)
            sets = {"pubmedqa": sets["pubmedqa"]}
            engine = HFEngine(policy.model, policy.tokenizer, cfg.eval.batch_size, progress=False)
            budget = Budget.from_config(cfg.budget, cfg.eval.max_new_tokens)
            rates, tokens = [], 0.0
            for _ in range(args.repeats):
                start = time.perf_counter()
                metrics, _ = evaluate(sets, policy.tokenizer, engine, cfg.eval, budget, prompt_format.think_close,
                                      "eval", None)
                rates.append(len(sets["pubmedqa"]) / (time.perf_counter() - start))
                tokens = metrics["eval/pubmedqa/mean_completion_tokens"]
            results[mode] = {"items_per_s": round(statistics.median(rates), 2), "runs": [round(r, 2) for r in rates],
                             "mean_completion_tokens": tokens, "batch_size": cfg.eval.batch_size}
    write_result("eval", {"engine": "hf", "model": "tiny (2-layer Qwen2, random weights)", "items": args.items,
                          "max_new_tokens": args.max_new_tokens, "by_budget": results})


if __name__ == "__main__":
    main()
