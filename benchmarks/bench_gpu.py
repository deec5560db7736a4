"""GPU benchmark: GRPO step time, tokens/s and peak memory, backend=hf versus backend=unsloth, on a model shaped like
Qwen2.5-3B-Instruct with random weights (no download); and evaluation throughput, vLLM versus transformers.

    python benchmarks/bench_gpu.py [--steps 10] [--only grpo|eval]

Settings are the recipe's (LoRA r=64 on all projections, 4-bit base, 6 generations, completions up to 256 tokens
here to keep the run short, lr 5e-6). Random weights generate random text, so every completion runs to its limit:
the numbers are per-token costs at full length, comparable between backends but not with a trained model's
early-stopping runs. Each backend runs in its own subprocess (Unsloth patches libraries globally on import).
Without CUDA it writes {"skipped": ...}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import write_result  # noqa: E402

QWEN25_3B = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                 num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
                 tie_word_embeddings=True, rms_norm_eps=1e-6)


def build_model(target: Path) -> Path:
    """A Qwen2.5-3B-shaped checkpoint with random weights and the tiny model's tokenizer (vocab padded)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from medgrpo.tiny import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model(ROOT / ".cache" / "models"))
    config = Qwen2Config(vocab_size=151936, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, torch_dtype="bfloat16", **QWEN25_3B)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def grpo_child(backend: str, model_dir: str, steps: int) -> dict:
    """Runs in a subprocess: one backend's GRPO steps through the real job code."""
    import torch

    if backend == "unsloth":
        import unsloth  # noqa: F401  (first, as in the backend)
    from datasets import Dataset

    from medgrpo.backends import load_policy
    from medgrpo.config import compose_config
    from medgrpo.prompting import PromptFormat
    from medgrpo.rewards import build_reward_functions
    from medgrpo.train import train

    out = Path(tempfile.mkdtemp())
    cfg = compose_config(f"backend={backend}", f"model.name_or_path={model_dir}", f"grpo.max_steps={steps}",
                         "grpo.max_completion_length=256", "grpo.save_steps=100000", "logger=disabled",
                         output_dir=out)
    funcs, weights = build_reward_functions(cfg.reward, PromptFormat.from_config(cfg.prompt))
    questions = [{"prompt": [{"role": "system", "content": cfg.prompt.system},
                             {"role": "user", "content": f"Question {i}: is the patient's condition improving?"}],
                  "answer": "yes", "answer_type": "yesno", "choices": []} for i in range(64)]
    policy = load_policy(cfg, backend)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    metrics = train(cfg, policy, Dataset.from_list(questions), funcs, weights, out, report_to=[])
    seconds = time.perf_counter() - start
    tokens = steps * cfg.grpo.per_device_train_batch_size * metrics.get("train/completions/mean_length", 0)
    return {"step_s": seconds / steps, "completion_tokens_per_s": tokens / seconds,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "steps": steps}


def eval_child(engine: str, model_dir: str, items: int) -> dict:
    """Runs in a subprocess: evaluation throughput of one engine (vLLM via the unsloth backend)."""
    from datasets import Dataset

    from medgrpo.backends import load_policy
    from medgrpo.config import compose_config
    from medgrpo.evaluation.budget import Budget
    from medgrpo.evaluation.engine import HFEngine
    from medgrpo.evaluation.evaluate import evaluate

    backend = "unsloth" if engine == "vllm" else "hf"
    cfg = compose_config(f"backend={backend}", f"model.name_or_path={model_dir}", "eval.max_new_tokens=256",
                         "logger=disabled", output_dir=tempfile.mkdtemp())
    policy = load_policy(cfg, backend)
    rows = Dataset.from_list([{"id": str(i), "prompt": [{"role": "user", "content": f"Case {i}: diagnosis?"}],
                               "answer": "yes", "answer_type": "yesno", "choices": []} for i in range(items)])
    if engine == "vllm":
        from medgrpo.backends.unsloth import VLLMEngine

        runner = VLLMEngine(policy.model, policy.tokenizer, adapter_dir=None)
    else:
        runner = HFEngine(policy.model, policy.tokenizer, batch_size=64)
    start = time.perf_counter()
    evaluate({"bench": rows}, policy.tokenizer, runner, cfg.eval, Budget(mode="off", max_new_tokens=256),
             "</reasoning>", "eval", None)
    return {"items_per_s": items / (time.perf_counter() - start), "items": items, "max_new_tokens": 256}


def run_child(kind: str, name: str, model_dir: Path, size: int) -> dict:
    command = [sys.executable, __file__, "--child", kind, name, str(model_dir), str(size)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--only", choices=["grpo", "eval"], default=None)
    parser.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, name, model_dir, size = args.child
        child = grpo_child if kind == "grpo" else eval_child
        print(json.dumps(child(name, model_dir, int(size))))
        return
    import torch

    if not torch.cuda.is_available():
        write_result("gpu", {"skipped": "no CUDA device on this machine: no GPU numbers measured"})
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "qwen2.5-3b-shaped")
        result = {"model": "Qwen2.5-3B-shaped, random weights", "settings": "recipe: LoRA r=64, 4-bit, 6 generations"}
        if args.only in (None, "grpo"):
            result["grpo"] = {b: run_child("grpo", b, model_dir, args.steps) for b in ("hf", "unsloth")}
        if args.only in (None, "eval"):
            result["eval"] = {e: run_child("eval", e, model_dir, args.items) for e in ("hf", "vllm")}
    write_result("gpu", result)


if __name__ == "__main__":
    main()
