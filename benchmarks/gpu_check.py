"""`make gpu-check`: the GPU path end to end on one GPU, offline, in about 8 minutes (H100/H200).

    python -m benchmarks.gpu_check [--workdir DIR] [--budget-s 480]

Each step is the command a user would type, in its own process, on a Qwen2.5-0.5B-shaped model with random weights
built here (no download). One JSON line per step: step, ok, seconds, peak_gpu_gib (the device's memory in use at
its highest during the step, above what was in use before it: vLLM's KV pool included, which is
backend.gpu_memory_utilization of the GPU), and error or detail. Exit status 0 only if every step passed.

    build               the random model (CPU)
    train/hf            10 GRPO steps, backend=hf (transformers + PEFT, 4-bit)
    train/unsloth       10 GRPO steps, backend=unsloth backend.fast_inference=false (4-bit)
    train/unsloth+vllm  10 GRPO steps, backend=unsloth backend.fast_inference=true (only where vllm is installed)
    eval/...            evaluation only (train.enabled=false eval.adapter_path=...) from each run's saved adapter,
                        through the engine that run used: hf, hf under Unsloth, vLLM (with budget=extend)
    export              make export of the last 4-bit Unsloth run (LoRA + merged 16-bit)
    sweep               one `python src/run.py -m ...` command with 2 jobs (lora.rank=8,16)
Without CUDA it exits at once with status 1, saying why.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.bench_gpu import ROOT, build_model, gpu_present

# The tiny preset's data, eval and GRPO sizes, on the 0.5B-shaped model with the recipe's LoRA targets in 4-bit.
# The bundled PubMedQA prompts run to ~750 tokens, so the preset's model.max_seq_length=1024 stays.
COMMON = ["preset=tiny", "model.builder=null", "model.dtype=bfloat16", "lora=r64",
          "lora.rank=16", "grpo.max_steps=10", "grpo.max_completion_length=64", "grpo.learning_rate=5e-6",
          "eval.limit=8", "eval.max_new_tokens=64", "eval.engine=auto", "backend.gpu_memory_utilization=0.3",
          "logger=disabled"]
# Budget forcing's several generation rounds per item, on the vLLM engine.
BUDGET_FORCING = ["budget=extend", "budget.max_thinking_tokens=48", "budget.max_answer_tokens=16"]
ENV = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "HYDRA_FULL_ERROR": "1", "TOKENIZERS_PARALLELISM": "false"}


class GpuMemoryPeak:
    """Samples the device's used memory (NVML) in a thread: this process never creates a CUDA context itself."""

    def __init__(self):
        self.peak = self.baseline = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml  # nvidia-ml-py, installed with vLLM

            pynvml.nvmlInit()
            self._handle, self._nvml = pynvml.nvmlDeviceGetHandleByIndex(0), pynvml
        except Exception:
            self._nvml = None

    def _used(self) -> int:
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used if self._nvml else 0

    def __enter__(self):
        self.baseline = self.peak = self._used()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self._used())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def gib(self) -> float | None:
        return round((self.peak - self.baseline) / 2**30, 2) if self._nvml else None


class Check:
    def __init__(self, workdir: Path, budget_s: float):
        self.workdir = workdir
        self.deadline = time.time() + budget_s
        self.memory = GpuMemoryPeak()
        self.failed: list[str] = []

    def report(self, step: str, ok: bool, seconds: float = 0.0, **fields) -> bool:
        print(json.dumps({"step": step, "ok": ok, "seconds": round(seconds, 1),
                          "peak_gpu_gib": fields.pop("peak_gpu_gib", None), **fields}), flush=True)
        if not ok:
            self.failed.append(step)
        return ok

    def command(self, step: str, argv: list[str], verify) -> bool:
        """Run argv from the repository root within what is left of the budget; verify() says what is wrong."""
        left = self.deadline - time.time()
        if left < 20:
            return self.report(step, False, error="skipped: the time budget is spent")
        start = time.time()
        with self.memory:
            try:
                done = subprocess.run(argv, cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True,
                                      timeout=left)
                problem = (f"exit {done.returncode}: {done.stderr.strip()[-1500:]}" if done.returncode
                           else verify())
            except subprocess.TimeoutExpired:
                problem = f"timed out after {left:.0f} s"
        return self.report(step, problem is None, time.time() - start, peak_gpu_gib=self.memory.gib(),
                           **({"error": problem} if problem else {}))

    def run(self, step: str, *overrides: str, verify=None) -> Path:
        """`python src/run.py <COMMON> <overrides>` into workdir/<step>; checks results.json (and more with verify)."""
        job_dir = self.workdir / step.replace("/", "_")
        argv = [sys.executable, "src/run.py", *COMMON, *overrides, f"paths.cache_dir={self.workdir / 'cache'}",
                f"hydra.run.dir={job_dir}"]
        self.command(step, argv, lambda: job_problem(job_dir) or (verify(job_dir) if verify else None))
        return job_dir


def job_problem(job_dir: Path) -> str | None:
    results = job_dir / "results.json"
    if not results.is_file():
        return f"no {results}"
    status = json.loads(results.read_text())
    return None if status["status"] == "ok" else f"status {status['status']}: {status.get('error')}"


def trained(steps: int):
    def verify(job_dir: Path) -> str | None:
        metrics = json.loads((job_dir / "results.json").read_text())["metrics"]
        if metrics.get("train/steps") != steps:
            return f"train/steps is {metrics.get('train/steps')}, expected {steps}"
        return None if (job_dir / "adapter" / "adapter_config.json").is_file() else "no adapter saved"
    return verify


def evaluated(job_dir: Path) -> str | None:
    metrics = json.loads((job_dir / "results.json").read_text())["metrics"]
    found = [key for key in metrics if key.startswith("eval/") and key.endswith("/accuracy")]
    return None if found else f"no eval/<dataset>/accuracy in {sorted(metrics)[:10]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "outputs" / "gpu_check" / time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting steps after this many seconds")
    args = parser.parse_args()
    if not gpu_present():
        print(json.dumps({"step": "cuda", "ok": False, "error": "no CUDA device visible: make gpu-check needs one "
                          "NVIDIA GPU (and make install-gpu); on a CPU machine run make test"}), flush=True)
        return 1
    check = Check(args.workdir, args.budget_s)
    start = time.time()
    try:
        model_dir = build_model(args.workdir / "qwen2.5-0.5b-shaped", "0.5b")
        check.report("build", True, time.time() - start, detail=str(model_dir))
    except Exception as error:  # noqa: BLE001  (reported as the step's failure; nothing else can run)
        check.report("build", False, time.time() - start, error=f"{type(error).__name__}: {error}")
        return 1
    model = f"model.name_or_path={model_dir}"
    vllm = importlib.util.find_spec("vllm") is not None
    runs = [("hf", ["backend=hf"], "hf"), ("unsloth", ["backend=unsloth", "backend.fast_inference=false"], "hf")]
    if vllm:
        runs.append(("unsloth+vllm", ["backend=unsloth", "backend.fast_inference=true"], "vllm"))
    else:
        check.report("train/unsloth+vllm", True, detail="skipped: vllm is not installed (fast_inference=false only)")
    for name, backend, engine in runs:
        job = check.run(f"train/{name}", model, *backend, "eval.after_training=false", verify=trained(10))
        check.run(f"eval/{name}", model, *backend, "train.enabled=false", f"eval.adapter_path={job / 'adapter'}",
                  f"eval.engine={engine}", *(BUDGET_FORCING if engine == "vllm" else []), verify=evaluated)
    exported = check.workdir / f"train_{runs[-1][0]}"
    check.command("export", [sys.executable, "-m", "medgrpo.export", str(exported), "--formats", "lora,merged"],
                  lambda: None if (exported / "export" / "merged_bfloat16" / "config.json").is_file()
                  else "no export/merged_bfloat16/config.json")
    sweep_dir = check.workdir / "sweep"
    check.command("sweep", [sys.executable, "src/run.py", "-m", *COMMON, model, *runs[-1][1], "grpo.max_steps=2",
                            "eval.limit=4", "lora.rank=8,16", f"paths.cache_dir={check.workdir / 'cache'}",
                            f"hydra.sweep.dir={sweep_dir}"],
                  lambda: sweep_problem(sweep_dir))
    return 1 if check.failed else 0


def sweep_problem(sweep_dir: Path) -> str | None:
    jobs = sorted(p.parent for p in sweep_dir.glob("*/results.json"))
    if len(jobs) != 2:
        return f"expected 2 job dirs with results.json under {sweep_dir}, found {len(jobs)}"
    return next((f"{job.name}: {problem}" for job in jobs if (problem := job_problem(job))), None)


if __name__ == "__main__":
    sys.exit(main())
