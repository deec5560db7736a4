"""The real entrypoint on the tiny model, in subprocesses: one run, evaluation-only, budget forcing, bad input."""
from __future__ import annotations

import os

import pytest

from tests._run import read_jsonl, read_results, run_entrypoint, run_module

pytestmark = pytest.mark.slow

PREDICTION_KEYS = {"id", "prompt", "completion", "extracted", "answer", "correct", "completion_tokens",
                   "thinking_tokens", "waits"}


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory, model_cache):
    job = tmp_path_factory.mktemp("job")
    result = run_entrypoint("preset=tiny", "grpo.max_steps=4", "eval.before_training=true",
                            "eval.during_training_steps=2", "eval.during_training_limit=2", f"hydra.run.dir={job}",
                            cache=model_cache.parent, env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-4000:]
    return job


def test_a_tiny_run_writes_results_predictions_and_adapter(trained_job):
    results = read_results(trained_job)
    assert results["status"] == "ok"
    assert results["seed"] == 42 and "preset=tiny" in results["overrides"]
    metrics = results["metrics"]
    eval_sets = sorted({key.split("/")[1] for key in metrics if key.startswith("eval/")})
    assert eval_sets, "no eval metrics"
    for name in eval_sets:
        for metric in ("accuracy", "accuracy_strict", "format_rate", "majority_baseline", "accuracy_ci_low",
                       "mean_completion_tokens", "mean_thinking_tokens", "truncation_rate"):
            assert f"eval/{name}/{metric}" in metrics
        rows = read_jsonl(trained_job / "predictions" / f"{name}.jsonl")
        assert len(rows) == metrics[f"eval/{name}/n_items"]
        assert all(PREDICTION_KEYS <= set(row) for row in rows)
    assert metrics["train/steps"] == 4
    assert (trained_job / "adapter" / "adapter_config.json").is_file()
    assert results["timings"]["train_s"] > 0 and results["config"]["model"]["builder"] == "tiny"
    assert list((trained_job / "wandb").glob("offline-run-*")), "no offline W&B run in the job dir"
    # torch's threads: the CPUs this process may run on (no launcher share, no setting), said in results and log
    threads = len(os.sched_getaffinity(0)) if "OMP_NUM_THREADS" not in os.environ else int(os.environ["OMP_NUM_THREADS"])
    assert results["cpu"]["torch_threads"] == threads
    assert results["cpu"]["wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loaded
    log = (trained_job / "run.log").read_text()
    assert f"torch uses {threads} CPU thread(s)" in log and "comes too late" not in log


def test_the_same_harness_evaluates_before_during_and_after_training(trained_job):
    results = read_results(trained_job)
    metrics = results["metrics"]
    assert {"eval_base/pubmedqa/accuracy", "eval/pubmedqa/accuracy"} <= set(metrics)
    assert (trained_job / "predictions_base" / "pubmedqa.jsonl").is_file()
    assert [entry["step"] for entry in results["eval_during"]] == [2, 4]
    assert all(entry["eval_during/pubmedqa/n_items"] == 2 for entry in results["eval_during"])


def test_evaluating_the_saved_adapter_reproduces_the_predictions(trained_job, tmp_path, model_cache):
    result = run_entrypoint("preset=tiny", "train.enabled=false", f"eval.adapter_path={trained_job / 'adapter'}",
                            f"hydra.run.dir={tmp_path}", cache=model_cache.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    for path in (trained_job / "predictions").glob("*.jsonl"):
        again = read_jsonl(tmp_path / "predictions" / path.name)
        assert [r["completion"] for r in again] == [r["completion"] for r in read_jsonl(path)]


# Through the real entrypoint, a check on our keys and one against TRL's GRPOConfig (each key's message:
# tests/test_config.py::test_bad_values_name_the_key, in process; lora.rank=0 end to end: test_config too).
@pytest.mark.parametrize("override, key", [
    ("grpo.num_generations=3", "grpo.num_generations"),
    ("+grpo.not_a_field=1", "grpo.not_a_field"),
])
def test_bad_config_fails_before_any_model_loads(override, key, tmp_path, model_cache):
    result = run_entrypoint("preset=tiny", *override.split(), f"hydra.run.dir={tmp_path}", cache=model_cache.parent,
                            timeout=120)
    assert result.returncode != 0
    results = read_results(tmp_path)
    assert results["status"] == "failed" and f"'{key}'" in results["error"]
    assert "model_load_s" not in results["timings"] and not (tmp_path / "adapter").exists()


def test_export_round_trips_merged_predictions_equal_the_adapters(trained_job, tmp_path, model_cache):
    export = run_module("medgrpo.export", str(trained_job), "--formats", "lora,merged", "--dtype", "float32",
                        "--out", str(tmp_path / "export"))
    assert export.returncode == 0, export.stderr[-3000:]
    merged = tmp_path / "export" / "merged_float32"
    assert (tmp_path / "export" / "lora" / "adapter_config.json").is_file() and (merged / "config.json").is_file()
    job = tmp_path / "merged_eval"
    result = run_entrypoint("preset=tiny", "train.enabled=false", "model.builder=null",
                            f"model.name_or_path={merged}", f"hydra.run.dir={job}", cache=model_cache.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    for path in (trained_job / "predictions").glob("*.jsonl"):
        assert [r["completion"] for r in read_jsonl(job / "predictions" / path.name)] == \
            [r["completion"] for r in read_jsonl(path)]


def test_gguf_export_without_llama_cpp_says_what_to_install(trained_job, tmp_path):
    export = run_module("medgrpo.export", str(trained_job), "--formats", "gguf", "--dtype", "float32",
                        "--out", str(tmp_path / "export"), env={"LLAMA_CPP_DIR": str(tmp_path / "missing")})
    assert export.returncode != 0 and "LLAMA_CPP_DIR" in export.stderr
