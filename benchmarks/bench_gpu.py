"""GPU benchmark: GRPO step time and peak memory, backend=hf versus backend=unsloth, on a model shaped like
Qwen2.5-3B-Instruct with random weights (no download); and evaluation throughput, vLLM versus transformers.

    python -m benchmarks.bench_gpu [--steps 10] [--warmup 3] [--only grpo|eval]

Settings are the recipe's (LoRA r=64 on all projections, 4-bit base, 6 generations, lr 5e-6), with completions up to
256 tokens to keep the run short. Random weights generate random text, so every completion runs to its limit: the
numbers are per-token costs at full length, comparable between backends but not with a trained model's runs.

What is measured, so that the comparison is fair:
- step time: only steady-state optimizer steps (a callback times each step; the first --warmup steps, where kernels
  compile and vLLM captures graphs, are dropped); model loading is reported apart as setup_s.
- memory: torch's peak allocated bytes during training. vLLM allocates its KV-cache pool up front
  (backend.gpu_memory_utilization of the GPU, whatever the model needs), so it is reported apart (kv_pool_gib) and
  the goal compares peak_without_kv_pool_gib.
- isolation: each backend runs in its own process (Unsloth patches libraries globally on import, so each child
  imports it before transformers, trl and peft, as the entrypoint does); this parent builds the model on the CPU
  and never touches the GPU, so it holds no GPU memory.
On a machine without an NVIDIA GPU it measures nothing, writes nothing, says so, and exits with
benchmarks._common.SKIPPED. On a GPU machine it runs in the environment `make install-gpu` fills (`make bench` hands
it that interpreter, `python` on PATH by default: GPU_PYTHON=...); an interpreter without CUDA torch, unsloth, vllm
or bitsandbytes fails at once, naming what is missing. A child that fails fails the benchmark (exit 1): nothing is
written, so benchmarks/results/gpu.json keeps the last measurement.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import SKIPPED, write_result

ROOT = Path(__file__).resolve().parents[1]

QWEN25_VOCAB = 151936
QWEN25_SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2),
}
GOALS = {"step_time_ratio": 0.5, "memory_ratio": 0.35}  # unsloth / hf, from the issue that asked for this benchmark


def build_model(target: Path, shape: str, tokenizer_dir: Path | None = None, vocab: int = QWEN25_VOCAB,
                filler: str = "<|filler_{}|>") -> Path:
    """A Qwen2.5-<shape>-shaped checkpoint with random bf16 weights, built on the CPU the way medgrpo.tiny builds
    the tiny model. Its tokenizer is the tiny model's (ChatML template, format tags) padded with `filler` tokens
    (formatted with their number) to `vocab` (Qwen2.5's by default), so the LM head has that size and every
    sampled id decodes: a random model samples fillers almost only."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from medgrpo.tiny import ensure_tiny_model

    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or ensure_tiny_model(ROOT / ".cache" / "models"))
    tokenizer.add_tokens([filler.format(i) for i in range(vocab - len(tokenizer))])
    config = Qwen2Config(vocab_size=vocab, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, max_position_embeddings=32768,
                         rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, dtype="bfloat16",
                         **QWEN25_SHAPES[shape])
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # half the memory and time of building in float32
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def kv_pool_bytes(model) -> int:
    """Bytes of the KV-cache pool vLLM allocated for Unsloth's colocated engine (0 without one): blocks x block
    size x (K and V for every layer), from the engine's cache config as vLLM fills it after profiling."""
    engine = getattr(model, "vllm_engine", None)
    if engine is None:
        return 0
    vllm_config = engine.llm_engine.vllm_config
    cache, model_config = vllm_config.cache_config, vllm_config.model_config
    hf = model_config.hf_config
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    element = model_config.dtype.itemsize if cache.cache_dtype == "auto" else 1  # fp8 caches: one byte
    per_token = 2 * hf.num_hidden_layers * hf.num_key_value_heads * head_dim * element
    return int(cache.num_gpu_blocks) * int(cache.block_size) * per_token


class StepTimer:
    """TrainerCallback-compatible: wall time of each optimizer step (generation included), synchronized."""

    def __init__(self):
        self.durations: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        import torch

        torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        torch.cuda.synchronize()
        self.durations.append(time.perf_counter() - self._start)


def _job_config(backend: str, model_dir: str, *overrides: str):
    """The job's config; Unsloth is imported here when the backend is Unsloth's, before the child imports
    transformers, trl or peft (as src/run.py does), so that its patches apply to what is measured."""
    from medgrpo.backends.unsloth import import_first_when_chosen
    from medgrpo.config import compose_config

    cfg = compose_config(f"backend={backend}", f"model.name_or_path={model_dir}", "model.dtype=bfloat16",
                         "logger=disabled", *overrides, output_dir=tempfile.mkdtemp(prefix="bench-gpu-"))
    import_first_when_chosen(cfg.backend)
    return cfg


def _load(cfg, backend: str):
    from medgrpo.backends import LoraSpec, load_policy

    return load_policy(backend, cfg.model, LoraSpec.from_config(cfg.lora), backend_cfg=cfg.backend, seed=cfg.seed)


def grpo_child(backend: str, model_dir: str, steps: int, warmup: int) -> dict:
    """Runs in a subprocess: one backend's GRPO steps through the real job code."""
    cfg = _job_config(backend, model_dir, f"grpo.max_steps={steps}", "grpo.max_completion_length=256",
                      "grpo.save_steps=100000")
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from medgrpo.evaluation.engine import has_vllm_engine
    from medgrpo.prompting import PromptFormat
    from medgrpo.rewards import build_reward_functions
    from medgrpo.train import train

    funcs, weights = build_reward_functions(cfg.reward, PromptFormat.from_config(cfg.prompt))
    questions = [{"prompt": [{"role": "system", "content": cfg.prompt.system},
                             {"role": "user", "content": f"Question {i}: is the patient's condition improving?"}],
                  "answer": "yes", "answer_type": "yesno", "choices": []} for i in range(64)]
    start = time.perf_counter()
    policy = _load(cfg, backend)
    setup_s = time.perf_counter() - start
    kv_pool = kv_pool_bytes(policy.model)
    timer = type("Timer", (StepTimer, TrainerCallback), {})()
    torch.cuda.reset_peak_memory_stats()
    metrics = train(cfg.grpo, policy, Dataset.from_list(questions), funcs, weights, Path(cfg.paths.output_dir),
                    report_to=[], seed=cfg.seed, use_vllm=has_vllm_engine(policy), callbacks=[timer])
    steady = timer.durations[warmup:]
    if not steady:
        raise RuntimeError(f"only {len(timer.durations)} steps ran; need more than --warmup {warmup}")
    peak = torch.cuda.max_memory_allocated()
    step_s = statistics.median(steady)
    tokens = cfg.grpo.per_device_train_batch_size * metrics.get("train/completions/mean_length", 0)
    return {"setup_s": setup_s, "step_s": step_s, "step_s_all": timer.durations, "steps_measured": len(steady),
            "completion_tokens_per_s": tokens / step_s, "peak_gib": peak / 2**30, "kv_pool_gib": kv_pool / 2**30,
            "peak_without_kv_pool_gib": (peak - kv_pool) / 2**30}


def eval_child(engine: str, model_dir: str, items: int, warmup: int) -> dict:
    """Runs in a subprocess: evaluation throughput of one engine (vLLM through the unsloth backend)."""
    backend = "unsloth" if engine == "vllm" else "hf"
    cfg = _job_config(backend, model_dir, "eval.max_new_tokens=256")
    from datasets import Dataset

    from medgrpo.evaluation.budget import Budget
    from medgrpo.evaluation.engine import HFEngine, VLLMEngine
    from medgrpo.evaluation.evaluate import evaluate

    policy = _load(cfg, backend)
    if engine == "vllm":
        generator = VLLMEngine(policy)
    else:
        generator = HFEngine(policy.model, policy.tokenizer, batch_size=64)
    budget = Budget(mode="off", max_new_tokens=256)
    rows = Dataset.from_list([{"id": str(i), "prompt": [{"role": "user", "content": f"Case {i}: diagnosis?"}],
                               "answer": "yes", "answer_type": "yesno", "choices": []} for i in range(items)])

    def seconds_for(dataset) -> float:
        start = time.perf_counter()
        evaluate({"bench": dataset}, policy.tokenizer, generator, cfg.eval, budget, "</reasoning>", "eval", None)
        return time.perf_counter() - start

    seconds_for(rows.select(range(min(8 * warmup, items))))  # warm-up: graph capture, kernel compilation
    seconds = seconds_for(rows)
    return {"items_per_s": items / seconds, "items": items, "max_new_tokens": 256,
            "kv_pool_gib": kv_pool_bytes(policy.model) / 2**30}


class ChildFailed(RuntimeError):
    """A benchmark child exited non-zero: the benchmark fails rather than record a half measurement."""


def run_child(kind: str, name: str, model_dir: Path, size: int, warmup: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_gpu", "--child", kind, name, str(model_dir), str(size),
               str(warmup)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise ChildFailed(f"{kind}/{name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratios(grpo: dict) -> dict:
    hf, unsloth = grpo["hf"], grpo["unsloth"]
    measured = {"step_time_ratio": unsloth["step_s"] / hf["step_s"],
                "memory_ratio": unsloth["peak_without_kv_pool_gib"] / hf["peak_without_kv_pool_gib"]}
    return {name: {"measured": value, "goal_at_most": GOALS[name], "met": value <= GOALS[name]}
            for name, value in measured.items()}


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU, whatever this interpreter's torch build: NVML (nvidia-ml-py, which
    vLLM installs), else the driver's nvidia-smi or its /proc entries. Creates no CUDA context, so it holds no GPU
    memory."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # noqa: BLE001  (no NVML library or no driver: ask the driver's other faces)
        pass
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        return listed.returncode == 0 and "GPU" in listed.stdout
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def missing_gpu_stack() -> list[str]:
    """What this interpreter lacks to run the GPU benchmark: a CUDA build of torch and the gpu extra."""
    import torch

    missing = [] if torch.version.cuda else [f"a CUDA build of torch (has {torch.__version__})"]
    return missing + [package for package in ("unsloth", "vllm", "bitsandbytes")
                      if importlib.util.find_spec(package) is None]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="first steps (or eval batches) left out of timings")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--only", choices=["grpo", "eval"], default=None)
    parser.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, name, model_dir, size, warmup = args.child
        child = grpo_child if kind == "grpo" else eval_child
        print(json.dumps(child(name, model_dir, int(size), int(warmup))))
        return 0
    if not gpu_present():
        print("SKIPPED: no NVIDIA GPU on this machine, so no GPU benchmark was measured "
              "(benchmarks/results/gpu.json is left as it was)")
        return SKIPPED
    missing = missing_gpu_stack()
    if missing:
        print(f"FAILED: this machine has a GPU, but {sys.executable} lacks {', '.join(missing)}: run the GPU "
              "benchmark in the environment make install-gpu fills (conda activate medgrpo; make bench, or "
              "python -m benchmarks.bench_gpu); benchmarks/results/gpu.json is left as it was", file=sys.stderr)
        return 1
    try:
        result = measure(args)
    except ChildFailed as failure:
        print(f"FAILED: {failure}\nbenchmarks/results/gpu.json is left as it was", file=sys.stderr)
        return 1
    write_result("gpu", result)
    return 0


def measure(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "qwen2.5-3b-shaped", "3b")
        result = {"model": "Qwen2.5-3B-shaped, random weights",
                  "settings": "recipe: LoRA r=64, 4-bit, 6 generations, completions <= 256 tokens",
                  "warmup_steps_excluded": args.warmup}
        if args.only in (None, "grpo"):
            result["grpo"] = {b: run_child("grpo", b, model_dir, args.steps, args.warmup) for b in ("hf", "unsloth")}
            result["unsloth_vs_hf"] = ratios(result["grpo"])
        if args.only in (None, "eval"):
            result["eval"] = {e: run_child("eval", e, model_dir, args.items, args.warmup) for e in ("hf", "vllm")}
    return result


if __name__ == "__main__":
    sys.exit(main())
