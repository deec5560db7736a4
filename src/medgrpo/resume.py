"""Training resume: which checkpoint a job continues from, whether it may, and what the trainer needs besides.

    plan = plan_resume(cfg.train.resume, output_dir / "checkpoints", checkpoint_identity(cfg.model, lora))
    train(..., resume=plan)      # trainer.train(resume_from_checkpoint=plan.checkpoint) + ResumeCallback(plan)

train.resume: `auto` (default) continues from the newest complete checkpoint in the job folder's checkpoints/,
`never` starts over (older checkpoints are moved aside, never mixed in), a path continues from that checkpoint.
transformers restores the adapter, optimizer, scheduler, RNG states, step and log history, and skips the batches
already trained. What it does not restore, done here: the epoch of TRL's RepeatSampler (its generator is
re-seeded, so without help every resumed epoch would replay the first epoch's order) and GRPOTrainer._step (which
picks the slice of a buffered generation batch).
With vLLM rollouts the engine serves the resumed weights without a reload, by reading of the library sources (not
run here): Unsloth's shared-weight engine gets the LoRA tensors from model.state_dict() on every generate call
(unsloth_zoo.vllm_utils.load_lora(load_tensors=True)), and TRL's own vLLM sync runs whenever global_step differs
from _last_loaded_step (-1 at start). ResumeCallback checks that those tensors are the checkpoint's.

A torn checkpoint (the job died while writing it) lacks files transformers writes before trainer_state.json, or
has an unreadable trainer_state.json, or transformers' JIT "incomplete" marker: it is removed and the next older
one is used. Each checkpoint carries medgrpo_checkpoint.json, the config it was trained with (CHECKED_KEYS); a
checkpoint of another model, LoRA rank or PEFT method is refused naming the key.
StopAtStepEnd is the trainer's side of medgrpo.signals: after SIGINT/SIGTERM it saves a checkpoint at the end of
the step and stops.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from medgrpo import signals
from medgrpo.errors import ConfigError
from medgrpo.results import write_json_atomic

log = logging.getLogger(__name__)
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
IDENTITY_FILE = "medgrpo_checkpoint.json"
INCOMPLETE_MARKER = "checkpoint-is-incomplete.txt"  # transformers' JIT checkpoint sentinel
WRITTEN_BEFORE_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth")  # trainer_state.json comes last
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin")


@dataclass
class ResumePlan:
    """Where training continues from (None: from scratch) and the identity every checkpoint records."""

    checkpoint: Path | None
    identity: dict = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        return checkpoint_step(self.checkpoint) if self.checkpoint else None


def checkpoint_identity(model_cfg, lora) -> dict:
    """What a checkpoint must share with the job resuming it: the base model and every LoRA setting
    (lora: a medgrpo.backends.LoraSpec; a PEFT method added to it is checked too)."""
    identity = {"model.name_or_path": str(model_cfg.name_or_path)}
    if model_cfg.get("builder") is not None:  # every built model's name_or_path is the same cache folder
        identity["model.builder"] = str(model_cfg.builder)
        if model_cfg.builder == "gguf":
            identity["model.gguf.file"] = str(model_cfg.gguf.file)
    for key, value in dataclasses.asdict(lora).items():
        identity[f"lora.{key}"] = list(value) if isinstance(value, tuple) else value
    return identity


def checkpoint_step(path: Path) -> int | None:
    match = CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def torn_reason(checkpoint: Path) -> str | None:
    """Why a checkpoint folder is incomplete, or None when transformers finished writing it."""
    if (checkpoint / INCOMPLETE_MARKER).exists():
        return f"it has {INCOMPLETE_MARKER}"
    missing = [name for name in (*WRITTEN_BEFORE_STATE, "trainer_state.json") if not (checkpoint / name).is_file()]
    if not any((checkpoint / name).is_file() for name in WEIGHT_FILES):
        missing.insert(0, "model/adapter weights")
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError) as error:
        return f"trainer_state.json unreadable ({error})"
    if state.get("global_step") != checkpoint_step(checkpoint):
        return f"trainer_state.json says step {state.get('global_step')}"
    return None


def newest_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint; torn ones newer than it are removed (they cannot be resumed, and a
    resumed run must not write into their leftovers)."""
    found = sorted((p for p in Path(checkpoints_dir).glob("checkpoint-*") if p.is_dir() and checkpoint_step(p)
                    is not None), key=checkpoint_step, reverse=True)
    for checkpoint in found:
        reason = torn_reason(checkpoint)
        if reason is None:
            return checkpoint
        log.warning("skipping torn checkpoint %s (%s): removing it", checkpoint, reason)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def check_identity(checkpoint: Path, identity: dict) -> None:
    """Refuse a checkpoint trained with another model or adapter, naming the first key that differs."""
    saved_file = checkpoint / IDENTITY_FILE
    if not saved_file.is_file():
        log.warning("%s has no %s: cannot check that it was trained with this model and LoRA", checkpoint,
                    IDENTITY_FILE)
        return
    saved = json.loads(saved_file.read_text())["identity"]
    for key in sorted(set(saved) | set(identity)):
        if saved.get(key) != identity.get(key):
            raise ConfigError(key, f"checkpoint {checkpoint} was trained with {saved.get(key)!r}, this job has "
                                   f"{identity.get(key)!r}; use the checkpoint's value, or train.resume=never "
                                   "(or another output folder) to start over")


def plan_resume(resume: str, checkpoints_dir: Path, identity: dict) -> ResumePlan:
    """train.resume -> the checkpoint to continue from, checked before any model loads."""
    checkpoints_dir = Path(checkpoints_dir)
    if resume == "never":
        if checkpoints_dir.is_dir() and any(checkpoints_dir.iterdir()):
            aside = checkpoints_dir.with_name(f"checkpoints.before-{time.strftime('%Y%m%d-%H%M%S')}")
            checkpoints_dir.rename(aside)
            log.warning("train.resume=never: the earlier checkpoints were moved to %s", aside)
        return ResumePlan(None, identity)
    if resume == "auto":
        checkpoint = newest_complete_checkpoint(checkpoints_dir) if checkpoints_dir.is_dir() else None
    else:
        checkpoint = Path(resume)
        if not checkpoint.is_dir() or checkpoint_step(checkpoint) is None:
            raise ConfigError("train.resume", f"expected auto, never or a checkpoint-<step> folder, got {resume!r}")
        if reason := torn_reason(checkpoint):
            raise ConfigError("train.resume", f"checkpoint {checkpoint} is incomplete: {reason}")
    if checkpoint is not None:
        check_identity(checkpoint, identity)
        log.info("resuming training from %s (step %d)", checkpoint, checkpoint_step(checkpoint))
    return ResumePlan(checkpoint, identity)


def check_resume_config(train_cfg, grpo_cfg) -> None:
    """The trainer's own resume switches would bypass these checks (or be ignored): refuse them."""
    if grpo_cfg.get("resume_from_checkpoint") is not None:
        raise ConfigError("grpo.resume_from_checkpoint", "use train.resume=<checkpoint path> (or auto/never): "
                          "medgrpo chooses and checks the checkpoint itself")
    if grpo_cfg.get("enable_jit_checkpoint"):
        raise ConfigError("grpo.enable_jit_checkpoint", "medgrpo saves a checkpoint on SIGTERM/SIGINT itself "
                          "(medgrpo.signals); remove this key")
    resume = train_cfg.get("resume", "auto")
    if not isinstance(resume, str) or not resume:
        raise ConfigError("train.resume", f"expected auto, never or a checkpoint path, got {resume!r}")


def prepare_trainer(trainer, plan: ResumePlan) -> None:
    """GRPOTrainer counts micro-steps in _step to pick the slice of its buffered generation batch; transformers
    does not restore it, so a resume inside a generation cycle would take the wrong slice."""
    if plan.step and hasattr(trainer, "_step"):
        trainer._step = plan.step * trainer.args.gradient_accumulation_steps


class ResumeCallback(TrainerCallback):
    """Records the identity beside each checkpoint (before transformers writes it, so it is never missing from
    a complete one) and, when resuming, sets the sampler's epoch and checks the restored weights."""

    def __init__(self, plan: ResumePlan):
        self.plan = plan

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save and state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_json_atomic(folder / IDENTITY_FILE, {"step": state.global_step, "identity": self.plan.identity})

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if self.plan.checkpoint is None:
            return
        _advance_sampler(train_dataloader, state.global_step, args.gradient_accumulation_steps)
        _check_restored_weights(model, self.plan.checkpoint)


def _find_repeat_sampler(dataloader):
    """TRL's RepeatSampler inside a (possibly accelerate-wrapped) DataLoader, or None."""
    from trl.trainer.utils import RepeatSampler

    pending = [dataloader]
    for _ in range(4):
        found = [getattr(obj, name, None) for obj in pending for name in ("sampler", "batch_sampler")]
        for candidate in found:
            if isinstance(candidate, RepeatSampler):
                return candidate
        pending = [obj for obj in found if obj is not None]
    return None


def _advance_sampler(dataloader, global_step: int, accumulation: int) -> None:
    """Draw the permutations of the epochs already trained, so this epoch's order is the uninterrupted one.
    An epoch's steps are counted as transformers counts them to pick the epoch it resumes in (Trainer
    set_initial_training_values): the last step of an epoch may accumulate fewer batches."""
    sampler = _find_repeat_sampler(dataloader)
    if sampler is None or not sampler.shuffle:
        return
    steps_per_epoch = max(-(-len(dataloader) // accumulation), 1)
    for _ in range(global_step // steps_per_epoch):
        torch.randperm(sampler.num_samples, generator=sampler.generator)


def _check_restored_weights(model, checkpoint: Path) -> None:
    """The trainable adapter now holds the checkpoint's tensors (what vLLM rollouts read), or fail loudly."""
    adapter_file = checkpoint / "adapter_model.safetensors"
    if model is None or not adapter_file.is_file() or not hasattr(model, "peft_config"):
        return
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(adapter_file))
    current = get_peft_model_state_dict(model)
    differing = [key for key, tensor in saved.items()
                 if key not in current or not torch.equal(current[key].detach().cpu().to(tensor.dtype), tensor)]
    if differing:
        raise RuntimeError(f"resuming from {checkpoint}: the model's adapter does not hold the checkpoint's weights "
                           f"({len(differing)} tensors differ, e.g. {differing[0]})")
    log.info("resumed from %s: adapter weights, optimizer, scheduler and RNG states restored", checkpoint)


class StopAtStepEnd(TrainerCallback):
    """Tells the trainer to save a checkpoint and stop at the end of the step during which a signal arrived."""

    def on_init_end(self, args, state, control, **kwargs):
        stop = signals.active()
        if stop is not None:  # from here on the trainer can stop at a step end with a checkpoint
            stop.training = True

    def on_train_begin(self, args, state, control, **kwargs):
        stop = signals.active()
        if stop is not None:
            stop.last_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        stop = signals.active()
        if stop is None:
            return
        stop.last_step = state.global_step
        if stop.signum is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        stop = signals.active()
        if stop is not None and stop.signum is not None:
            stop.checkpoint = f"{args.output_dir}/checkpoint-{state.global_step}"

    def on_train_end(self, args, state, control, **kwargs):
        stop = signals.active()
        if stop is not None:
            stop.training = False
