"""Benchmark: what the framework costs on top of a bare TRL script doing the same tiny GRPO run on CPU.

    python -m benchmarks.bench_overhead [--steps 20] [--repeats 3]

Both sides load the same tiny model, attach the same LoRA, train on the same prepared rows with the same reward
functions and GRPOConfig values, and save the adapter; they alternate (ABAB...) in one process with the same
thread settings, and the median times are compared. Ours is `medgrpo.backends.load_policy` + `medgrpo.train.train`
(what a job runs between data preparation and evaluation). Target: ratio <= 1.05. The whole job's fixed costs
(config checks, data preparation, results.json) are reported beside it in seconds.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import write_result
from medgrpo.backends import LoraSpec, load_policy, resolve_model_path
from medgrpo.config import compose_config, validate
from medgrpo.data import prepare_train
from medgrpo.prompting import PromptFormat
from medgrpo.rewards import build_reward_functions
from medgrpo.train import train

TARGET_RATIO = 1.05


def bare_trl(model_dir: str, cfg, dataset, reward_funcs, reward_weights, out: str) -> None:
    """What a user would write with TRL + PEFT alone, with the same settings."""
    from omegaconf import OmegaConf
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    model = get_peft_model(model, LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=0.0,
                                             target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
    args = GRPOConfig(**OmegaConf.to_container(cfg.grpo), output_dir=out, seed=cfg.seed, data_seed=cfg.seed,
                      use_cpu=True, bf16=False, reward_weights=reward_weights, remove_unused_columns=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.train()
    trainer.save_model(f"{out}/adapter")


def ours(cfg, dataset, reward_funcs, reward_weights, out: str) -> None:
    policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora))
    train(cfg.grpo, policy, dataset, reward_funcs, reward_weights, Path(out), report_to=[], seed=cfg.seed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config("preset=tiny", f"grpo.max_steps={args.steps}", "grpo.logging_steps=1000000",
                             "logger=disabled", output_dir=tmp)
        start = time.perf_counter()
        validate(cfg)
        prompt_format = PromptFormat.from_config(cfg.prompt)
        reward_funcs, reward_weights = build_reward_functions(cfg.reward, prompt_format)
        model_dir = resolve_model_path(cfg.model)
        policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora))
        dataset, _ = prepare_train(cfg.data, policy.tokenizer, prompt_format, cfg.seed,
                                   cfg.model.max_seq_length - cfg.grpo.max_completion_length)
        fixed_costs = time.perf_counter() - start
        times = {"bare_trl": [], "medgrpo": []}
        bare_trl(model_dir, cfg, dataset, reward_funcs, reward_weights, f"{tmp}/warmup")  # first-call costs
        for repeat in range(args.repeats):
            for side in ("bare_trl", "medgrpo") if repeat % 2 == 0 else ("medgrpo", "bare_trl"):
                out = f"{tmp}/{side}{repeat}"
                begin = time.perf_counter()
                if side == "bare_trl":
                    bare_trl(model_dir, cfg, dataset, reward_funcs, reward_weights, out)
                else:
                    ours(cfg, dataset, reward_funcs, reward_weights, out)
                times[side].append(time.perf_counter() - begin)
    bare, framework = statistics.median(times["bare_trl"]), statistics.median(times["medgrpo"])
    write_result("overhead", {
        "ratio_medgrpo_over_bare_trl": round(framework / bare, 4),
        "target_ratio": TARGET_RATIO,
        "meets_target": framework / bare <= TARGET_RATIO,
        "median_s": {"bare_trl": round(bare, 3), "medgrpo": round(framework, 3)},
        "runs_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "job_fixed_costs_s": round(fixed_costs, 3),
        "settings": {"steps": args.steps, "repeats": args.repeats, "model": "tiny", "reward": "recipe",
                     "completions_per_step": cfg.grpo.per_device_train_batch_size,
                     "max_completion_length": cfg.grpo.max_completion_length},
    })


if __name__ == "__main__":
    main()
