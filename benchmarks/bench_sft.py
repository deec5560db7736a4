"""Benchmark: SFT tokens/s on the tiny_learner model, our SFT path against a bare TRL SFTTrainer script.

    python -m benchmarks.bench_sft [--steps 20] [--repeats 3]

Both sides train the same model (full fine-tuning, as `make demo`) on the same prepared prompt/completion rows
(medgrpo.sft.prepare_sft: targets in the prompt format, contexts cut to fit) with the same SFTConfig values, and
save the weights; they alternate (ABAB...) in one process and the median times are compared. Ours is
`medgrpo.backends.load_policy` + `medgrpo.sft.train_sft` (what a stage=sft job runs between data preparation and
evaluation). Tokens/s counts the tokens SFTTrainer saw (its num_tokens). Target: time ratio <= 1.05.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import write_result
from medgrpo.backends import LoraSpec, load_policy, resolve_model_path
from medgrpo.config import compose_config
from medgrpo.prompting import PromptFormat
from medgrpo.sft import prepare_sft, train_sft

TARGET_RATIO = 1.05


def bare_trl(model_dir: str, cfg, dataset, out: str) -> int:
    """What a user would write with TRL alone, with the same settings. Returns the tokens trained on."""
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    args = SFTConfig(**OmegaConf.to_container(cfg.stage.sft.trainer), output_dir=out, seed=0, data_seed=0,
                     use_cpu=True, bf16=False, completion_only_loss=True, save_strategy="no", report_to=[])
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(f"{out}/weights")
    return _logged_tokens(trainer.state.log_history)


def ours(cfg, dataset, out: str) -> int:
    policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora))
    metrics = train_sft(cfg.stage.sft, policy, dataset, Path(out) / "weights", Path(out), report_to=[])
    return round(metrics.get("train_sft/tokens_per_second", 0.0) * metrics["train_sft/seconds"])


def _logged_tokens(history: list[dict]) -> int:
    return int(next((e["num_tokens"] for e in reversed(history) if "num_tokens" in e), 0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config("preset=tiny", "model=tiny_learner", "lora=full", "stage=sft", "stage.sft.seed=0",
                             f"stage.sft.trainer.max_steps={args.steps}", "logger=disabled", output_dir=tmp)
        model_dir = resolve_model_path(cfg.model)
        policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora))
        dataset, _ = prepare_sft(cfg.stage.sft, cfg.data, policy.tokenizer, PromptFormat.from_config(cfg.prompt), 0)
        times = {"bare_trl": [], "medgrpo": []}
        tokens = {"bare_trl": [], "medgrpo": []}
        bare_trl(model_dir, cfg, dataset, f"{tmp}/warmup")  # first-call costs
        for repeat in range(args.repeats):
            for side in ("bare_trl", "medgrpo") if repeat % 2 == 0 else ("medgrpo", "bare_trl"):
                out = f"{tmp}/{side}{repeat}"
                begin = time.perf_counter()
                seen = bare_trl(model_dir, cfg, dataset, out) if side == "bare_trl" else ours(cfg, dataset, out)
                times[side].append(time.perf_counter() - begin)
                tokens[side].append(seen)
    bare, framework = statistics.median(times["bare_trl"]), statistics.median(times["medgrpo"])
    write_result("sft", {
        "ratio_medgrpo_over_bare_trl": round(framework / bare, 4),
        "target_ratio": TARGET_RATIO,
        "meets_target": framework / bare <= TARGET_RATIO,
        "tokens_per_second": {side: round(statistics.median(tokens[side]) / statistics.median(times[side]), 1)
                              for side in times},
        "median_s": {"bare_trl": round(bare, 3), "medgrpo": round(framework, 3)},
        "runs_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "settings": {"steps": args.steps, "repeats": args.repeats, "model": "tiny_learner", "peft": "full",
                     "batch": cfg.stage.sft.trainer.per_device_train_batch_size,
                     "max_length": cfg.stage.sft.trainer.max_length},
    })


if __name__ == "__main__":
    main()
