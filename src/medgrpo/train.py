"""GRPO training with TRL's GRPOTrainer: the `grpo` config group is passed to GRPOConfig unchanged."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from medgrpo.backends import Policy
from medgrpo.backends.vllm_engines import track_engine
from medgrpo.results import write_jsonl_atomic
from medgrpo.resume import ResumeCallback, ResumePlan, StopAtStepEnd, prepare_trainer
from medgrpo.signals import raise_if_stopped
from medgrpo.tracking import guard_trainer_reporting
from medgrpo.errors import ConfigError

log = logging.getLogger(__name__)
# The GRPOConfig fields that define what GRPO optimises and how: both backends must hold the same values.
OBJECTIVE_FIELDS = ("loss_type", "beta", "epsilon", "epsilon_high", "delta", "mask_truncated_completions",
                    "scale_rewards", "importance_sampling_level", "num_iterations", "num_generations", "temperature",
                    "top_p", "top_k", "max_completion_length", "learning_rate", "per_device_train_batch_size",
                    "gradient_accumulation_steps", "steps_per_generation", "max_steps", "max_grad_norm",
                    "weight_decay", "optim", "lr_scheduler_type", "warmup_steps", "reward_weights",
                    "vllm_importance_sampling_correction")
# Unsloth 2026.10.9's GRPOConfig fills these when they are unset, differently from TRL (unsloth/models/rl.py
# 3354-3370, 3521-3577): loss_type -> dapo; beta -> 0.0 (dapo, dr_grpo) or 0.001; for an explicit dapo epsilon_high
# -> 0.28 and mask_truncated_completions -> True; for cispo epsilon_high -> 5.0. Explicit values are kept.
FILLED_BY_UNSLOTH = ("loss_type", "beta", "epsilon_high", "mask_truncated_completions")


def check_grpo_for_backend(grpo_cfg: DictConfig, backend: str, use_vllm: bool) -> None:
    """Before any model loads, refuse the `grpo` values Unsloth's patched GRPOConfig and GRPOTrainer would not
    keep, so that backend=unsloth trains the objective backend=hf would."""
    if backend != "unsloth":
        return
    for key in FILLED_BY_UNSLOTH:
        if grpo_cfg.get(key) is None:
            raise ConfigError(f"grpo.{key}", "unset, so Unsloth would choose it, unlike TRL under backend=hf; state "
                                             "it (grpo/recipe.yaml does)")
    if str(grpo_cfg.loss_type).lower() == "dr_grpo" and grpo_cfg.get("scale_rewards", "group") in (True, "group"):
        raise ConfigError("grpo.scale_rewards", "Unsloth forces none for loss_type=dr_grpo (unsloth/models/rl.py "
                                                "3552-3558); set grpo.scale_rewards=none, which both backends keep")
    if use_vllm and grpo_cfg.get("use_vllm") is False:
        raise ConfigError("grpo.use_vllm", "Unsloth's trainer generates with the vLLM engine the model was loaded "
                                           "with whatever this says; set backend.fast_inference=false instead")
    if use_vllm and grpo_cfg.get("vllm_mode", "colocate") != "colocate":
        raise ConfigError("grpo.vllm_mode", "Unsloth's trainer always uses its colocated vLLM engine; server mode "
                                            "needs backend=hf")


def grpo_settings(grpo_cfg: DictConfig, *, seed: int, use_vllm: bool, reward_weights: list[float],
                  output_dir: Path, report_to: list[str]) -> dict:
    """GRPOConfig's arguments: the `grpo` group as it stands, plus what the job decides (seed, outputs, device,
    vLLM)."""
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
    # grpo.use_vllm null: the backend decides (Unsloth's patched trainer generates rollouts with the vLLM engine it
    # attached to the model); true on the hf backend: TRL's own vLLM (grpo.vllm_mode).
    if settings.get("use_vllm") is None:
        settings["use_vllm"] = use_vllm
    return settings


def _same(key: str, asked, held) -> bool:
    if key == "top_k":  # TRL's "no top-k" is 0, vLLM's is -1: Unsloth maps one to the other (rl_replacements.py:161)
        return (asked or -1) == (held or -1)
    return asked == held


def trl_grpo_config_class(config_class: type) -> type:
    """TRL's own GRPOConfig among `config_class`'s bases: the deepest class of that name in the MRO. Unsloth's
    patched class subclasses it and takes its name, qualname and module (unsloth/models/rl.py:701-728, 3992), so
    neither a name nor `trl.GRPOConfig` (rebound to the patched class) tells them apart; the inheritance does."""
    return [c for c in config_class.__mro__ if c.__name__ == "GRPOConfig"][-1]


def _as_json(config) -> dict:
    return json.loads(json.dumps(config.to_dict(), default=str))


def trl_grpo_values(settings: dict) -> dict:
    """What TRL's own GRPOConfig makes of `settings`, as a JSON-able dict: the reference held_grpo_config compares
    against. Build it before the trainer: every TrainingArguments resets accelerate's state
    (transformers/training_args.py:1840), which a trainer already built relies on."""
    from trl import GRPOConfig

    return _as_json(trl_grpo_config_class(GRPOConfig)(**settings))


def held_grpo_config(args, asked: dict, grpo_keys) -> dict:
    """The GRPOConfig the trainer holds (after Unsloth's patches, if any), as a JSON-able dict. Raises ConfigError
    where its values differ from `asked` (trl_grpo_values of the same settings) on an objective field or a key of
    the `grpo` group: the run would not train what the config says. Values are compared whatever the class
    (Unsloth's passes for TRL's). (Unsloth also matches bf16/fp16 to the model's dtype, a matter of precision, not
    of the objective.)"""
    held = _as_json(args)
    for key in dict.fromkeys((*grpo_keys, *OBJECTIVE_FIELDS)):
        if key in asked and not _same(key, asked[key], held.get(key)):
            raise ConfigError(f"grpo.{key}", f"{asked[key]!r}, but the trainer's GRPOConfig holds {held.get(key)!r}: "
                                             "this backend would train another objective")
    return held


class TrainMetrics(dict):
    """`train/...` metrics, and the GRPOConfig the trainer held (results.json `grpo_config`)."""

    def __init__(self, metrics: dict[str, float], grpo_config: dict):
        super().__init__(metrics)
        self.grpo_config = grpo_config


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
) -> TrainMetrics:
    """Run GRPO, save the LoRA adapter to <output_dir>/adapter, return `train/...` metrics (and the GRPOConfig
    the trainer held)."""
    from trl import GRPOConfig, GRPOTrainer

    resume = resume or ResumePlan(None)  # a stop signal ends training after a checkpoint (JobInterrupted)
    settings = grpo_settings(grpo_cfg, seed=seed, use_vllm=use_vllm, reward_weights=reward_weights,
                             output_dir=output_dir, report_to=report_to)
    asked = trl_grpo_values(settings)  # before the trainer (and before Unsloth's class fills anything)
    args = GRPOConfig(**settings)
    trainer = GRPOTrainer(
        model=policy.model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        processing_class=policy.tokenizer,
        # StopAtStepEnd before ResumeCallback: a signal's checkpoint gets its identity file too
        callbacks=[*(callbacks or []), StopAtStepEnd(), ResumeCallback(resume)],
    )
    held = held_grpo_config(trainer.args, asked, grpo_cfg)  # before step 1: refuse a silently changed objective
    track_engine(getattr(getattr(trainer, "vllm_generation", None), "llm", None))  # TRL's colocated vLLM, if any
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
    return TrainMetrics(metrics, held)
