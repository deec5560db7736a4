"""`make gpu-check` and the GPU benchmark, as far as a CPU machine can check them: they refuse or skip loudly
without CUDA, report one JSON line per step, judge each step's outputs as they should, compose every step's
config, lay the 4-bit copy out as a hub cache, force budget forcing's early close, and build the Qwen2.5-shaped
random model correctly. The GPU steps themselves run only on a GPU (make gpu-check)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest


from benchmarks import bench_gpu, gpu_check
from benchmarks._common import SKIPPED
from tests._fake_unsloth import STOP, cuda_driver, fake_unsloth_package, imported_before_unsloth

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_cuda_exits_non_zero_at_once_saying_why():
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1
    assert lines == [{"step": "cuda", "ok": False, "error": lines[0]["error"]}]  # no step ran
    assert "no CUDA device" in lines[0]["error"]


def test_make_bench_on_cpu_says_the_gpu_benchmark_was_skipped_and_keeps_its_results():
    results = ROOT / "benchmarks" / "results" / "gpu.json"
    before = results.read_bytes() if results.exists() else None
    direct = subprocess.run([sys.executable, "-m", "benchmarks.bench_gpu"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert direct.returncode == SKIPPED and "SKIPPED: no NVIDIA GPU" in direct.stdout
    done = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--only", "gpu"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert "bench_gpu" in done.stdout and "SKIPPED" in done.stdout and "no GPU benchmark was measured" in done.stdout
    assert (results.read_bytes() if results.exists() else None) == before


@pytest.fixture
def gpu_machine(monkeypatch, tmp_path):
    """This CPU machine told it has an NVIDIA GPU (a machine probe, not a library), with results written to
    tmp_path instead of benchmarks/results."""
    import benchmarks._common

    monkeypatch.setattr(bench_gpu, "gpu_present", lambda: True, raising=False)
    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(sys, "argv", ["bench_gpu"])
    return tmp_path / "results"


def test_on_a_gpu_machine_an_interpreter_without_the_gpu_stack_fails_and_writes_nothing(gpu_machine, capsys):
    assert bench_gpu.main() == 1  # this .venv: CPU torch, no unsloth, vllm or bitsandbytes
    error = capsys.readouterr().err
    assert "lacks a CUDA build of torch" in error and "unsloth, vllm, bitsandbytes" in error
    assert "make install-gpu" in error and not gpu_machine.exists()


@pytest.mark.slow
@pytest.mark.gpu_path
def test_a_failed_child_fails_the_benchmark_and_writes_nothing(gpu_machine, tmp_path, monkeypatch, capsys):
    # The interpreter is told it has the GPU stack, and the model folder is empty: the first child (GRPO on
    # backend=hf) really runs and really fails, as a child on a GPU machine can (OOM, a library error).
    monkeypatch.setattr(bench_gpu, "missing_gpu_stack", lambda: [])
    monkeypatch.setattr(bench_gpu, "build_model", lambda target, shape: target)
    assert bench_gpu.main() == 1  # before: {"failed": ...} written into gpu.json, exit 0
    error = capsys.readouterr().err
    assert "FAILED: grpo/hf exited 1" in error and "gpu.json is left as it was" in error
    assert not gpu_machine.exists()


def test_make_bench_runs_the_gpu_benchmark_in_the_gpu_environment_on_a_gpu_machine(monkeypatch):
    from benchmarks import run_all

    monkeypatch.setattr(run_all, "gpu_present", lambda: True)
    assert run_all.interpreter("bench_gpu", "/opt/conda/envs/medgrpo/bin/python") == \
        "/opt/conda/envs/medgrpo/bin/python"
    assert run_all.interpreter("bench_grade", "/opt/conda/envs/medgrpo/bin/python") == sys.executable
    monkeypatch.setattr(run_all, "gpu_present", lambda: False)  # no GPU: this interpreter, which says it skipped
    assert run_all.interpreter("bench_gpu", "/opt/conda/envs/medgrpo/bin/python") == sys.executable


@pytest.mark.slow
@pytest.mark.gpu_path
def test_the_unsloth_child_imports_unsloth_before_transformers_trl_and_peft(tmp_path):
    env, record = fake_unsloth_package(tmp_path)
    driver = cuda_driver(tmp_path, "sys.argv = ['bench_gpu', *sys.argv[1:]]\n"
                                   "runpy.run_module('benchmarks.bench_gpu', run_name='__main__')\n")
    for kind, name in (("grpo", "unsloth"), ("eval", "vllm")):
        done = subprocess.run([sys.executable, str(driver), "--child", kind, name, str(tmp_path / "model"), "1", "0"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert STOP in done.stderr, done.stderr[-2000:]  # it reached the Unsloth backend
        assert imported_before_unsloth(record) == {"trl": False, "transformers": False, "peft": False}, kind


def test_each_step_is_one_json_line_with_pass_fail_and_time(tmp_path, capsys):
    check = gpu_check.Check(tmp_path, budget_s=600)
    assert check.command("fine", [sys.executable, "-c", "pass"], lambda: None)
    assert not check.command("crashes", [sys.executable, "-c", "raise SystemExit('boom')"], lambda: None)
    assert not check.command("wrong", [sys.executable, "-c", "pass"], lambda: "no adapter saved")
    check.deadline = 0  # the budget is spent: later steps are reported, not started
    assert not check.command("late", [sys.executable, "-c", "pass"], lambda: None)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["step"], line["ok"]) for line in lines] == [("fine", True), ("crashes", False), ("wrong", False),
                                                             ("late", False)]
    assert all({"seconds", "peak_gpu_gib"} <= set(line) for line in lines)
    assert "boom" in lines[1]["error"] and lines[2]["error"] == "no adapter saved"
    assert "budget is spent" in lines[3]["error"]
    assert check.failed == ["crashes", "wrong", "late"]


def test_a_step_that_needs_vllm_fails_unrun_where_vllm_is_missing(tmp_path, capsys):
    assert importlib.util.find_spec("vllm") is None  # this CPU .venv, like the lent GPU machine, has no vLLM
    check = gpu_check.Check(tmp_path, budget_s=600)
    marker = tmp_path / "ran"
    assert not check.command("train/unsloth+vllm", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
                             lambda: None, needs=("vllm",))
    line = json.loads(capsys.readouterr().out)
    assert line["ok"] is False and "vllm not installed" in line["error"] and not marker.exists()
    assert check.failed == ["train/unsloth+vllm"]


def _job(folder: Path, backend: str = "hf", status: str = "ok", free_gib: float | None = 70.0, **extra) -> Path:
    folder.mkdir(parents=True)
    host = {"name": "gpu-host"} if free_gib is None else {"gpu": {"name": "H100", "total_gib": 79.1,
                                                                  "free_gib_before_load": free_gib}}
    (folder / "results.json").write_text(json.dumps({"status": status, "error": "OOM", "host": host,
                                                     "config": {"backend": {"name": backend}}, **extra}))
    return folder


def _sweep_jobs(tmp_path, free_unsloth: float, free_hf: float | None, unsloth_metrics=None):
    _job(tmp_path / "0_backend=unsloth", "unsloth", free_gib=free_unsloth,
         metrics=unsloth_metrics if unsloth_metrics is not None else {"train_sft/steps": 4.0, "train/steps": 2.0})
    _job(tmp_path / "1_backend=hf", "hf", free_gib=free_hf, metrics={})


def test_a_sweep_needs_both_backends_ok_and_sft_under_unsloth(tmp_path):
    assert "found []" in gpu_check.sweep_problem(tmp_path)
    _job(tmp_path / "0_backend=unsloth", "unsloth", metrics={"train_sft/steps": 4.0})
    _job(tmp_path / "1_backend=hf", "hf", status="failed")
    assert gpu_check.sweep_problem(tmp_path) == "1_backend=hf: status failed: OOM"
    other = tmp_path / "without_sft"
    _sweep_jobs(other, 70.0, 70.0, unsloth_metrics={"train/steps": 2.0})
    assert "stage=sft_grpo did not run SFT" in gpu_check.sweep_problem(other)


@pytest.mark.parametrize("free_hf, problem", [
    (70.0, None),                 # all back
    (69.1, None),                 # within 1 GiB: allocator caches, the CUDA context
    (52.0, "18.0 GiB of job 1"),  # a 0.2 x 80 GiB vLLM KV pool still held
])
def test_free_gpu_memory_before_job_2_must_be_back_within_1_gib(tmp_path, free_hf, problem):
    _sweep_jobs(tmp_path, 70.0, free_hf)
    found = gpu_check.sweep_problem(tmp_path)
    assert found is None if problem is None else problem in found


def test_a_job_without_the_free_memory_record_fails_the_sweep(tmp_path):
    _sweep_jobs(tmp_path, 70.0, None)
    assert "host.gpu is missing" in gpu_check.sweep_problem(tmp_path)


def test_the_held_objective_must_be_the_recipe_s(tmp_path):
    recipe = gpu_check.recipe_objective(tmp_path)
    assert recipe == {"loss_type": "dapo", "beta": 0.0, "epsilon_high": 0.28, "mask_truncated_completions": False}
    held = _job(tmp_path / "ok", grpo_config={**recipe, "max_steps": 5})
    assert gpu_check.holds(recipe)(held) is None
    changed = _job(tmp_path / "changed", grpo_config={**recipe, "mask_truncated_completions": True})
    assert "{'mask_truncated_completions': True}" in gpu_check.holds(recipe)(changed)
    assert "holds {'loss_type': None" in gpu_check.holds(recipe)(_job(tmp_path / "none"))


def test_budget_forcing_must_have_appended_a_wait(tmp_path):
    job = tmp_path / "job"
    (job / "predictions").mkdir(parents=True)
    (job / "predictions" / "pubmedqa.jsonl").write_text(
        "\n".join(json.dumps({"id": str(i), "waits": 0}) for i in range(3)))
    assert "no prediction has waits > 0 in 3" in gpu_check.budget_forced(job)
    (job / "predictions" / "gsm8k.jsonl").write_text(json.dumps({"id": "0", "waits": 1}))
    assert gpu_check.budget_forced(job) is None


def test_a_merged_export_must_be_unquantized_bf16(tmp_path):
    import torch
    from safetensors.torch import save_file

    export = tmp_path / "export"
    (export / "lora").mkdir(parents=True)
    (export / "lora" / "adapter_config.json").write_text("{}")
    merged = export / "merged_bfloat16"
    merged.mkdir()
    (merged / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes"}}))
    assert "quantization_config" in gpu_check.export_problem(export)
    (merged / "config.json").write_text("{}")
    save_file({"w": torch.zeros(2, dtype=torch.bfloat16), "absmax": torch.zeros(2, dtype=torch.uint8)},
              str(merged / "model.safetensors"))
    assert gpu_check.export_problem(export) == "merged_bfloat16 holds ['BF16', 'U8'] tensors, expected BF16 only"
    save_file({"w": torch.zeros(2, dtype=torch.bfloat16)}, str(merged / "model.safetensors"))
    assert gpu_check.export_problem(export) is None


def test_the_4bit_copy_resolves_offline_as_a_hub_id(tmp_path, tiny_model_dir):
    """The hub cache layout gpu-check writes, read by the real libraries: transformers loads the hub id offline,
    and export finds its weights in the cache (the tiny model stands in for the 4-bit copy, which needs CUDA)."""
    import shutil

    snapshot = gpu_check.place_in_hub(tmp_path / "hf-home", gpu_check.HUB_REPO)
    for file in tiny_model_dir.iterdir():
        shutil.copy(file, snapshot)
    probe = textwrap.dedent(f"""
        from transformers import AutoConfig, AutoTokenizer
        from huggingface_hub import snapshot_download
        from medgrpo.export import missing_base_weights
        repo = {gpu_check.HUB_REPO!r}
        AutoConfig.from_pretrained(repo); AutoTokenizer.from_pretrained(repo)
        print(snapshot_download(repo), missing_base_weights(repo))
        """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(snapshot), "False"]


@pytest.mark.parametrize("step", ["TRAIN_VLLM", "EVAL_BUDGET_FORCING", "SWEEP", "STANDBY", "PLAIN_HF"])
def test_each_step_composes_and_passes_the_checks_made_before_loading(step, tmp_path):
    """A typo in an override would otherwise first show on a lent GPU, minutes into the check."""
    from medgrpo.backends import LoraSpec
    from medgrpo.config import compose_config, validate
    from medgrpo.evaluation.engine import check_engine_request
    from medgrpo.train import check_grpo_for_backend

    backends = gpu_check.SWEEP_BACKENDS if step == "SWEEP" else (None,)
    for backend in backends:
        chosen = [f"backend={backend}"] if backend else []
        # PLAIN_HF runs on the folder the check builds (main() puts it first); any folder passes the path check.
        on_folder = [f"model.name_or_path={tmp_path}"] if step == "PLAIN_HF" else []
        cfg = compose_config(*gpu_check.COMMON, *on_folder, *getattr(gpu_check, step), *chosen, output_dir=tmp_path)
        validate(cfg)
        use_vllm = cfg.backend.name == "unsloth" and cfg.backend.fast_inference
        check_engine_request(cfg.eval.engine, cfg.backend.name, cfg.backend, LoraSpec.from_config(cfg.lora),
                             cfg.eval.adapter_path, cfg.model, str(cfg.model.name_or_path))
        check_grpo_for_backend(cfg.grpo, cfg.backend.name, use_vllm)
        assert cfg.model.max_seq_length == 1024 and cfg.grpo.optim == "adamw_8bit"
    if step == "EVAL_BUDGET_FORCING":
        assert cfg.budget.mode == "extend" and cfg.prompt.think_tag == gpu_check.THINK_TAG


@pytest.mark.slow
@pytest.mark.gpu_path
def test_budget_forcing_is_forced_on_the_random_model_with_filler_tokens(tmp_path, tiny_model_dir, monkeypatch,
                                                                          model_cache):
    """The gpu-check model's tokenizer (fillers ending in </filler>) on a tiny body, through the real entrypoint
    and the transformers engine: the random model closes its thinking at once and "Wait" is appended."""
    from tests._run import run_entrypoint

    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
    monkeypatch.setitem(bench_gpu.QWEN25_SHAPES, "test", small)
    model = bench_gpu.build_model(tmp_path / "model", "test", tokenizer_dir=tiny_model_dir, vocab=gpu_check.VOCAB,
                                  filler=gpu_check.FILLER)
    overrides = [o for o in gpu_check.EVAL_BUDGET_FORCING
                 if not o.startswith(("backend", "eval.engine", "model.name_or_path"))]  # this tiny body instead
    done = run_entrypoint("preset=tiny", "model.builder=null", f"model.name_or_path={model}", *overrides,
                          "eval.limit=2", "data.eval=[pubmedqa]", "logger=disabled", f"hydra.run.dir={tmp_path / 'job'}",
                          cache=model_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert gpu_check.budget_forced(tmp_path / "job") is None


def test_kv_pool_is_blocks_times_block_size_times_kv_bytes_per_token():
    # A fake of the objects Unsloth's vLLM engine exposes (argument plumbing only): Qwen2.5-3B's KV shape in bf16.
    import torch

    hf_config = SimpleNamespace(hidden_size=2048, num_attention_heads=16, num_hidden_layers=36, num_key_value_heads=2)
    vllm_config = SimpleNamespace(cache_config=SimpleNamespace(num_gpu_blocks=1000, block_size=16, cache_dtype="auto"),
                                  model_config=SimpleNamespace(hf_config=hf_config, dtype=torch.bfloat16))
    model = SimpleNamespace(vllm_engine=SimpleNamespace(llm_engine=SimpleNamespace(vllm_config=vllm_config)))
    assert bench_gpu.kv_pool_bytes(model) == 1000 * 16 * (2 * 36 * 2 * 128 * 2)
    assert bench_gpu.kv_pool_bytes(SimpleNamespace()) == 0  # no vLLM engine: no pool


def test_ratios_compare_steady_step_time_and_memory_without_the_kv_pool():
    grpo = {"hf": {"step_s": 10.0, "peak_without_kv_pool_gib": 20.0},
            "unsloth": {"step_s": 4.0, "peak_without_kv_pool_gib": 8.0}}
    assert bench_gpu.ratios(grpo) == {
        "step_time_ratio": {"measured": 0.4, "goal_at_most": 0.5, "met": True},
        "memory_ratio": {"measured": 0.4, "goal_at_most": 0.35, "met": False}}


@pytest.mark.slow
@pytest.mark.gpu_path
def test_the_qwen_shaped_random_model_has_the_real_vocabulary_and_decodes_every_id(tmp_path, tiny_model_dir,
                                                                                    monkeypatch):
    from transformers import AutoConfig, AutoTokenizer

    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
    monkeypatch.setitem(bench_gpu.QWEN25_SHAPES, "test", small)
    target = bench_gpu.build_model(tmp_path / "model", "test", tokenizer_dir=tiny_model_dir)
    config = AutoConfig.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    assert config.vocab_size == len(tokenizer) == bench_gpu.QWEN25_VOCAB
    assert config.tie_word_embeddings and config.num_key_value_heads == 2
    assert tokenizer.decode([config.vocab_size - 1]).startswith("<|filler_")  # the largest id a sample can hold
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<|im_start|>")
