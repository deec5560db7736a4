"""GRPO training with TRL's GRPOTrainer: the `grpo` config group is passed to GRPOConfig unchanged."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from medgrpo.backends import Policy
from medgrpo.results import write_jsonl_atomic
from medgrpo.resume import ResumeCallback, ResumePlan, prepare_trainer
from medgrpo.signals import StopAtStepEnd, raise_if_stopped
from medgrpo.tracking import guard_trainer_reporting

log = logging.getLogger(__name__)


def build_grpo_config(grpo_cfg: DictConfig, *, seed: int, use_vllm: bool, reward_weights: list[float],
                      output_dir: Path, report_to: list[str]):
    """TRL's GRPOConfig: the `grpo` group as it stands, plus what the job decides (seed, outputs, device, vLLM)."""
    from trl import GRPOConfig

    on_cuda = torch.cuda.is_available()
    settings = OmegaConf.to_container(grpo_cfg, resolve=True)
    settings.update(
        output_dir=str(output_dir / "checkpoints"),
        seed=seed,
        data_seed=seed,
        reward_weights=reward_weights,
        report_to=report_to,
        run_name=output_dir.name,
        use_cpu=not on_cuda,
        bf16=on_cuda and torch.cuda.is_bf16_supported(),
        fp16=on_cuda and not torch.cuda.is_bf16_supported(),
        remove_unused_columns=False,  # rewards read answer/answer_type/choices columns
    )
    # Unsloth's patched trainer generates rollouts with the vLLM engine it attached to the model.
    settings.setdefault("use_vllm", use_vllm)
    return GRPOConfig(**settings)


def summarize_log_history(history: list[dict]) -> dict[str, float]:
    """Flatten TRL's log history into `train/...` metrics: final values and the first/last reward windows."""
    metrics: dict[str, float] = {}
    step_logs = [entry for entry in history if "reward" in entry]
    for entry in history:
        for key, value in entry.items():
            if isinstance(value, (int, float)) and math.isfinite(value) and key not in ("epoch", "step"):
                metrics[f"train/{key}"] = float(value)
    if step_logs:
        window = max(1, len(step_logs) // 4)
        metrics["train/reward_first_window"] = sum(e["reward"] for e in step_logs[:window]) / window
        metrics["train/reward_last_window"] = sum(e["reward"] for e in step_logs[-window:]) / window
    return metrics


def train(
    grpo_cfg: DictConfig,
    policy: Policy,
    train_dataset,
    reward_funcs: list,
    reward_weights: list[float],
    output_dir: Path,
    report_to: list[str],
    *,
    seed: int,
    use_vllm: bool = False,
    callbacks: list | None = None,
    resume: ResumePlan | None = None,
) -> dict[str, float]:
    """Run GRPO, save the LoRA adapter to <output_dir>/adapter, return `train/...` metrics."""
    from trl import GRPOTrainer

    resume = resume or ResumePlan(None)  # a stop signal ends training after a checkpoint (JobInterrupted)

    args = build_grpo_config(grpo_cfg, seed=seed, use_vllm=use_vllm, reward_weights=reward_weights,
                             output_dir=output_dir, report_to=report_to)
    trainer = GRPOTrainer(
        model=policy.model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        processing_class=policy.tokenizer,
        # StopAtStepEnd before ResumeCallback: a signal's checkpoint gets its identity file too
        callbacks=[*(callbacks or []), StopAtStepEnd(), ResumeCallback(resume)],
    )
    log.info("GRPO: %d steps, %d completions per prompt, %d train prompts",
             args.max_steps, args.num_generations, len(train_dataset))
    guard_trainer_reporting(trainer)  # a W&B failure mid-run costs the tracking, not the job
    prepare_trainer(trainer, resume)
    trainer.train(resume_from_checkpoint=str(resume.checkpoint) if resume.checkpoint else None)
    history = trainer.state.log_history  # a resumed run's history starts with the checkpoint's
    write_jsonl_atomic(output_dir / "train_log.jsonl", history)
    raise_if_stopped()
    trainer.save_model(str(output_dir / "adapter"))
    policy.tokenizer.save_pretrained(str(output_dir / "adapter"))
    metrics = summarize_log_history(history)
    metrics["train/steps"] = float(trainer.state.global_step)
    zero_std = metrics.get("train/frac_reward_zero_std")
    if zero_std is not None and zero_std > 0.9:
        log.warning("%.0f%% of prompt groups had identical rewards: GRPO gets no signal from them "
                    "(reward too hard/easy, or too few num_generations)", 100 * zero_std)
    clipped = metrics.get("train/completions/clipped_ratio")
    if clipped is not None and clipped > 0.2:
        log.warning("%.0f%% of training completions were truncated at grpo.max_completion_length=%d",
                    100 * clipped, args.max_completion_length)
    return metrics
