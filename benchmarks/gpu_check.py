"""`make gpu-check`: the GPU path end to end on one GPU, offline, within 8 minutes on one H100.

    python -m benchmarks.gpu_check [--workdir DIR] [--budget-s 480]

Run it in the environment `make install-gpu` fills (CUDA torch, unsloth, vllm, bitsandbytes). On a lent GPU machine
without a package registry (torch, transformers, accelerate and peft preinstalled), once
`../shared/tools/device-wheels.sh unsloth` has filled .whl on a machine with one, it is one command there:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      && PYTHONPATH=/tmp/site:$PWD/src python3 -m benchmarks.gpu_check

vLLM (300+ MB) does not travel that way, so there the vLLM steps fail, saying so; only the full environment passes.

Each step is the command a user would type, in its own process, on a model built here (no download): Qwen2.5-0.5B's
shape (24 layers, hidden 896) with random weights and a 32k vocabulary, and a copy of it quantized to 4-bit
(bitsandbytes nf4, as Unsloth's *-bnb-4bit repos are) in a hub cache (HF_HOME=<workdir>/hf-home) as
medgrpo-check/qwen2.5-0.5b-shaped-bnb-4bit: how a pre-quantized model reaches a user. One JSON line per step: step,
ok, seconds, peak_gpu_gib (the device's memory in use at its highest during the step, above what was in use before
it, vLLM's KV pool included), and error or detail. Exit status 0 only if every step passed; a step the time budget
leaves no room for fails, as does a vLLM step where vllm is not installed.

  step                   what it checks                                                                    est. s
  build                  the bf16 model, built on the CPU                                                     15
  build/4bit-hub         its 4-bit copy in the hub cache (a CUDA subprocess: bitsandbytes quantizes there)      15
  train/unsloth+vllm     GRPO, 5 steps, backend=unsloth + vLLM on the 4-bit hub model; before training,       85
                         eval.before_training=true through vLLM (eval_base/); results.json grpo_config holds
                         the recipe's loss_type, beta, epsilon_high and mask_truncated_completions
  eval/unsloth+vllm      evaluation only, from that run's adapter, through vLLM with budget=extend: the model  60
                         closes its thinking at once, "Wait" is appended (predictions' waits), it goes on
  sweep/unsloth,hf       one process (hydra/launcher=basic), `-m backend=unsloth,hf stage=sft_grpo`: SFT ->     85
                         GRPO under Unsloth + vLLM, then under hf; the free GPU memory before job 2 loads
                         (results.json host.gpu) is back within 1 GiB of job 1's
  export                 make export of train/unsloth+vllm: the LoRA, and a merged bfloat16 model from the     15
                         4-bit hub base (dequantized: no quantization_config, bf16 tensors only)
  train/unsloth+standby  GRPO, 3 steps, backend.standby=true (vLLM sleep mode), then evaluation               100
  train/hf               GRPO, 5 steps, backend=hf (transformers + PEFT, 4-bit on the fly from the bf16         30
                         folder), then evaluation                                                         total 405

How the estimates were made (an H100, idle; no step has run on a GPU yet: the first run replaces them). A process:
~10 s of Python imports (torch, transformers, trl, hydra); `import unsloth` ~15 s more (it rewrites and compiles
TRL's trainers, unsloth/models/rl.py). A vLLM engine (unsloth_zoo/vllm_utils.py load_vllm, compilation level 3,
inductor, CUDAGraphMode.FULL_AND_PIECEWISE): Dynamo + inductor ~30 s the first time, ~8 s from vLLM's compile cache
(~/.cache/vllm, keyed by the configuration: the vLLM steps share model, max_seq_length, LoRA rank and memory share,
so only the first compiles); memory profiling ~11 s (Unsloth's table in load_vllm, for an 8B model); CUDA graphs:
backend.gpu_memory_utilization=0.2 leaves ~15 GiB of an H100's free memory for the KV cache, for which Unsloth's
table sets max_num_seqs=64; vLLM captures batch sizes up to 2 x 64 = 128 (vllm/config/vllm.py _set_cudagraph_sizes:
1, 2, 4, then every 8: 19 sizes), piecewise and full-decode, each with and without LoRA: ~60 graphs at ~0.1 s.
Standby raises the memory share to ~0.9 (vllm_utils.py:4487): 256 sequences, sizes to 512, ~172 graphs (Unsloth's own
count, vllm_utils.py:2690), and another configuration to compile. A GRPO step (8 completions of 64 tokens): ~1 s with
vLLM rollouts, ~2 s with transformers' generate on 4-bit weights (64 sequential passes through 24 layers); an
evaluation of 24 items, ~3 s. Summed: a vLLM step ~25 s of imports + ~3 s to load + ~52 s for its engine (cold;
~30 s warm) + its work. The build: 30 s on this project's 2-core CPU machine at load 8 (52 s with Qwen's 152k
vocabulary, where loading the tokenizer with its 150k added tokens took 25 s, against 3 s with 30k: hence 32k, for
every process that loads it); ~15 s on an idle 16-core host.

Forcing the early close: a random model never writes </reasoning>. Every filler token of this model's tokenizer ends
in `</filler>`, and 30.7k of its 32.8k ids are fillers. With prompt.think_tag=filler (and a system prompt that names
the tag) the thinking delimiter is `</filler>`; sampled at eval.temperature=1.0 (greedy decoding of a random model
repeats one token, as often a real one as not), its first token is a filler 94% of the time: the model "closes its
thinking" at once, budget=extend (num_ignore=1) cuts there, appends "Wait" and generates again; predictions record
waits=1. The same trick passes through the transformers engine on CPU (tests/test_gpu_check.py).

model.max_seq_length=1024 (the preset composes 2048): the bundled PubMedQA prompts run to ~750 tokens, plus 64-token
completions or the budget's 48 + 16; a shorter context is a smaller vLLM engine.
Without an NVIDIA GPU it exits at once with status 1, saying why.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.bench_gpu import ROOT, build_model, gpu_present

HUB_REPO = "medgrpo-check/qwen2.5-0.5b-shaped-bnb-4bit"
HUB_COMMIT = "0" * 40
VOCAB = 32768
THINK_TAG = "filler"  # every filler token ends in </filler>: see "Forcing the early close" above
FILLER = "<|filler_{}|></" + THINK_TAG + ">"
COMMON = ["preset=tiny", "model.builder=null", "model.dtype=bfloat16", "model.max_seq_length=1024", "lora=r64",
          "lora.rank=16", "grpo.max_completion_length=64", "grpo.learning_rate=5e-6", "grpo.optim=adamw_8bit",
          "eval.limit=8", "eval.max_new_tokens=64", "backend.gpu_memory_utilization=0.2", "logger=disabled"]
ON_HUB = [f"model.name_or_path={HUB_REPO}"]
VLLM = ["backend=unsloth", "backend.fast_inference=true", "eval.engine=vllm"]
# Each step's overrides after COMMON (the eval step adds eval.adapter_path, the sweep sweeps SWEEP_BACKENDS).
TRAIN_VLLM = [*ON_HUB, *VLLM, "grpo.max_steps=5", "eval.before_training=true", "eval.after_training=false",
              "objective=train/reward"]
EVAL_BUDGET_FORCING = [*ON_HUB, *VLLM, "train.enabled=false", "eval.temperature=1.0", "budget=extend",
                       "budget.num_ignore=1", "budget.max_thinking_tokens=48", "budget.max_answer_tokens=16",
                       f"prompt.think_tag={THINK_TAG}",
                       f"prompt.system='Think inside <{THINK_TAG}>...</{THINK_TAG}>, then answer inside "
                       "<answer>...</answer>.'"]
SWEEP = [*ON_HUB, "hydra/launcher=basic", "eval.engine=auto", "stage=sft_grpo", "stage.sft.trainer.max_steps=4",
         "grpo.max_steps=2", "eval.limit=4"]
SWEEP_BACKENDS = ("unsloth", "hf")  # in this order, in one process
STANDBY = [*ON_HUB, *VLLM, "backend.standby=true", "grpo.max_steps=3"]
# after model.name_or_path=<the bf16 folder>: quantized to 4-bit on the fly
PLAIN_HF = ["backend=hf", "eval.engine=hf", "grpo.max_steps=5"]
OBJECTIVE = ("loss_type", "beta", "epsilon_high", "mask_truncated_completions")  # held as the recipe states them
MEMORY_BACK_WITHIN_GIB = 1.0
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
        self.env = {**os.environ, **ENV, "HF_HOME": str(workdir / "hf-home")}  # where the 4-bit hub copy is

    def report(self, step: str, ok: bool, seconds: float = 0.0, **fields) -> bool:
        print(json.dumps({"step": step, "ok": ok, "seconds": round(seconds, 1),
                          "peak_gpu_gib": fields.pop("peak_gpu_gib", None), **fields}), flush=True)
        if not ok:
            self.failed.append(step)
        return ok

    def command(self, step: str, argv: list[str], verify, needs: tuple[str, ...] = ()) -> bool:
        """Run argv from the repository root within what is left of the budget; verify() says what is wrong.
        A step that `needs` a package this interpreter lacks fails at once, unrun."""
        missing = [package for package in needs if importlib.util.find_spec(package) is None]
        if missing:
            return self.report(step, False, error=f"{', '.join(missing)} not installed in {sys.executable}: this "
                                                  "step checks that path, so it fails (make install-gpu installs it)")
        left = self.deadline - time.time()
        if left < 20:
            return self.report(step, False, error="skipped: the time budget is spent")
        start = time.time()
        with self.memory:
            try:
                done = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=left)
                problem = (f"exit {done.returncode}: {done.stderr.strip()[-1500:]}" if done.returncode
                           else verify())
            except subprocess.TimeoutExpired:
                problem = f"timed out after {left:.0f} s"
        return self.report(step, problem is None, time.time() - start, peak_gpu_gib=self.memory.gib(),
                           **({"error": problem} if problem else {}))

    def run(self, step: str, *overrides: str, verify=None, needs: tuple[str, ...] = ()) -> Path:
        """`python src/run.py <COMMON> <overrides>` into workdir/<step>; checks results.json (and more with verify)."""
        job_dir = self.workdir / step.replace("/", "_")
        argv = [sys.executable, "src/run.py", *COMMON, *overrides, f"paths.cache_dir={self.workdir / 'cache'}",
                f"hydra.run.dir={job_dir}"]
        self.command(step, argv, lambda: job_problem(job_dir) or (verify(job_dir) if verify else None), needs)
        return job_dir


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def job_problem(job_dir: Path) -> str | None:
    if not (job_dir / "results.json").is_file():
        return f"no {job_dir / 'results.json'}"
    status = results(job_dir)
    return None if status["status"] == "ok" else f"status {status['status']}: {status.get('error')}"


def all_of(*verifies):
    def verify(job_dir: Path) -> str | None:
        return next((problem for check in verifies if (problem := check(job_dir))), None)
    return verify


def trained(steps: int):
    def verify(job_dir: Path) -> str | None:
        metrics = results(job_dir)["metrics"]
        if metrics.get("train/steps") != steps:
            return f"train/steps is {metrics.get('train/steps')}, expected {steps}"
        return None if (job_dir / "adapter" / "adapter_config.json").is_file() else "no adapter saved"
    return verify


def evaluated(prefix: str):
    def verify(job_dir: Path) -> str | None:
        metrics = results(job_dir)["metrics"]
        found = [key for key in metrics if key.startswith(f"{prefix}/") and key.endswith("/accuracy")]
        return None if found else f"no {prefix}/<dataset>/accuracy in {sorted(metrics)[:10]}"
    return verify


def holds(objective: dict):
    """results.json grpo_config (the GRPOConfig the trainer held, Unsloth's patches included) has `objective`."""
    def verify(job_dir: Path) -> str | None:
        held = results(job_dir).get("grpo_config") or {}
        wrong = {key: held.get(key) for key, value in objective.items() if held.get(key) != value}
        return f"grpo_config holds {wrong}, the recipe states {objective}" if wrong else None
    return verify


def budget_forced(job_dir: Path) -> str | None:
    """Some prediction had its early close replaced by "Wait": the extend branch of budget forcing ran."""
    rows = [json.loads(line) for path in sorted((job_dir / "predictions").glob("*.jsonl"))
            for line in path.read_text().splitlines()]
    if not rows:
        return "no predictions written"
    return None if any(row["waits"] > 0 for row in rows) else \
        f"no prediction has waits > 0 in {len(rows)}: the early close was not forced"


def sweep_problem(sweep_dir: Path) -> str | None:
    """Both jobs ok (the Unsloth one ran SFT then GRPO), and the free GPU memory before the hf job loaded is back
    within MEMORY_BACK_WITHIN_GIB of what it was before the Unsloth job loaded."""
    jobs = {results(path.parent)["config"]["backend"]["name"]: path.parent
            for path in sorted(sweep_dir.glob("*/results.json"))}
    if sorted(jobs) != ["hf", "unsloth"]:
        return f"expected a backend=unsloth and a backend=hf job under {sweep_dir}, found {sorted(jobs)}"
    problem = next((f"{job.name}: {p}" for job in jobs.values() if (p := job_problem(job))), None)
    if problem:
        return problem
    if "train_sft/steps" not in results(jobs["unsloth"])["metrics"]:
        return "the Unsloth job has no train_sft/steps: stage=sft_grpo did not run SFT"
    gpu = [results(jobs[name])["host"].get("gpu") for name in ("unsloth", "hf")]
    if None in gpu:
        return "results.json host.gpu is missing: no free-memory record to compare"
    first, second = (record["free_gib_before_load"] for record in gpu)
    if second < first - MEMORY_BACK_WITHIN_GIB:
        return (f"job 2 (hf) loaded with {second} GiB free, job 1 (unsloth) with {first} GiB: {first - second:.1f} "
                "GiB of job 1 (its vLLM engine and KV pool?) was still held")
    return None


def safetensors_dtypes(folder: Path) -> set[str]:
    """The tensor dtypes in a folder's *.safetensors, read from their headers (8-byte length, then JSON)."""
    dtypes = set()
    for path in folder.glob("*.safetensors"):
        with path.open("rb") as file:
            header = json.loads(file.read(struct.unpack("<Q", file.read(8))[0]))
        dtypes |= {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}
    return dtypes


def export_problem(export_dir: Path) -> str | None:
    merged = export_dir / "merged_bfloat16"
    if not (export_dir / "lora" / "adapter_config.json").is_file():
        return f"no {export_dir / 'lora' / 'adapter_config.json'}"
    if not (merged / "config.json").is_file():
        return f"no {merged / 'config.json'}"
    if "quantization_config" in json.loads((merged / "config.json").read_text()):
        return "merged_bfloat16/config.json has a quantization_config: the 4-bit base was merged without dequantizing"
    dtypes = safetensors_dtypes(merged)
    return None if dtypes == {"BF16"} else f"merged_bfloat16 holds {sorted(dtypes)} tensors, expected BF16 only"


def hub_snapshot(hf_home: Path, repo: str) -> Path:
    """Where huggingface_hub keeps a download of `repo` under HF_HOME=hf_home: hub/models--org--name/snapshots/
    <commit>, with refs/main naming the commit (place_in_hub writes both), so that the hub id resolves offline."""
    return hf_home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / HUB_COMMIT


def place_in_hub(hf_home: Path, repo: str) -> Path:
    snapshot = hub_snapshot(hf_home, repo)
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot.parents[1] / "refs").mkdir(exist_ok=True)
    (snapshot.parents[1] / "refs" / "main").write_text(HUB_COMMIT)
    return snapshot


def quantize_into_hub(model_dir: Path, hf_home: Path) -> None:
    """Runs in a subprocess (it needs CUDA): the bf16 model loaded in 4-bit nf4 with double quantization, as
    Unsloth's *-bnb-4bit repos are made, and saved with its tokenizer as HUB_REPO in the hub cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization, dtype=torch.bfloat16,
                                                 device_map={"": 0})
    snapshot = place_in_hub(hf_home, HUB_REPO)
    model.save_pretrained(snapshot)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(snapshot)


def quantized_in_hub(hf_home: Path) -> str | None:
    config = hub_snapshot(hf_home, HUB_REPO) / "config.json"
    if not config.is_file():
        return f"no {config}"
    return None if "quantization_config" in json.loads(config.read_text()) else f"{config} is not quantized"


def recipe_objective(workdir: Path) -> dict:
    """The recipe's (conf/grpo/recipe.yaml) values of the GRPOConfig fields Unsloth would otherwise fill."""
    from medgrpo.config import compose_config

    grpo = compose_config(output_dir=workdir).grpo
    return {key: grpo[key] for key in OBJECTIVE}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "outputs" / "gpu_check" / time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting steps after this many seconds")
    parser.add_argument("--quantize", nargs=2, type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quantize:
        quantize_into_hub(*args.quantize)
        return 0
    if not gpu_present():
        print(json.dumps({"step": "cuda", "ok": False, "error": "no CUDA device visible: make gpu-check needs one "
                          "NVIDIA GPU (and make install-gpu); on a CPU machine run make test"}), flush=True)
        return 1
    check = Check(args.workdir, args.budget_s)
    start = time.time()
    try:
        model_dir = build_model(args.workdir / "qwen2.5-0.5b-shaped", "0.5b", vocab=VOCAB, filler=FILLER)
        check.report("build", True, time.time() - start, detail=str(model_dir))
    except Exception as error:  # noqa: BLE001  (reported as the step's failure; nothing else can run)
        check.report("build", False, time.time() - start, error=f"{type(error).__name__}: {error}")
        return 1
    hf_home = args.workdir / "hf-home"
    check.command("build/4bit-hub", [sys.executable, "-m", "benchmarks.gpu_check", "--quantize", str(model_dir),
                                     str(hf_home)], lambda: quantized_in_hub(hf_home))
    vllm = ("vllm",)
    train = check.run("train/unsloth+vllm", *TRAIN_VLLM, needs=vllm,
                      verify=all_of(trained(5), evaluated("eval_base"), holds(recipe_objective(args.workdir))))
    check.run("eval/unsloth+vllm", *EVAL_BUDGET_FORCING, f"eval.adapter_path={train}", needs=vllm,
              verify=all_of(evaluated("eval"), budget_forced))
    sweep_dir = args.workdir / "sweep"
    sweep = [sys.executable, "src/run.py", "-m", *COMMON, *SWEEP, f"backend={','.join(SWEEP_BACKENDS)}",
             f"paths.cache_dir={args.workdir / 'cache'}", f"hydra.sweep.dir={sweep_dir}"]
    check.command("sweep/unsloth,hf", sweep, lambda: sweep_problem(sweep_dir), needs=vllm)
    check.command("export", [sys.executable, "-m", "medgrpo.export", str(train), "--formats", "lora,merged"],
                  lambda: export_problem(train / "export"))
    check.run("train/unsloth+standby", *STANDBY, needs=vllm, verify=all_of(trained(3), evaluated("eval")))
    check.run("train/hf", f"model.name_or_path={model_dir}", *PLAIN_HF, verify=all_of(trained(5), evaluated("eval")))
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
