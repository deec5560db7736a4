"""One job, start to end: validate -> data -> model -> (eval before) -> GRPO -> eval -> results.json.

Called by src/run.py with the composed Hydra config; returns the objective for sweepers. Every job leaves a
results.json (status running while it runs, then ok or failed; written atomically). A failed single run exits
non-zero: a user's mistake (bad config or data) with one line naming the key, a bug with its traceback. A failed
job inside a sweep is recorded and returns None, so the sweep goes on and Optuna marks the trial FAIL.
The job folder is locked while the job runs (medgrpo.jobfolder); a job that already ended ok there with the same
config is skipped (train.rerun=true runs it again); training resumes from the folder's newest complete checkpoint
(train.resume, medgrpo.resume); SIGINT/SIGTERM end it as `interrupted` after saving a checkpoint
(medgrpo.signals), with exit code 128 + the signal's number.
"""
from __future__ import annotations

import logging
import math
import os
import platform
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from medgrpo import config as config_checks
from medgrpo.config import objective_keys, unproduced_objectives
from medgrpo.cpu import use_threads
from medgrpo.errors import ConfigError, MedgrpoError
from medgrpo.jobfolder import JobFolderBusy, finished_result, hold_job_folder, mark_skipped
from medgrpo.evaluation.metrics import ACCURACY_CI_METHOD
from medgrpo.results import redact_secrets, write_json_atomic
from medgrpo.signals import JobInterrupted, defer_signals, stop_signals

if TYPE_CHECKING:
    from medgrpo.resume import ResumePlan

log = logging.getLogger(__name__)


def _job_identity(cfg: DictConfig) -> tuple[list[str], str, str | None, bool]:
    """(overrides, run name, sweep group, is multirun) of the current Hydra job."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    name = hydra_cfg.job.override_dirname or cfg.task_name
    group = Path(hydra_cfg.sweep.dir).name if multirun else None
    return overrides, name, group, multirun


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch`/torchrun (and the only process otherwise): it logs, evaluates, writes."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class JobOutput:
    """What a job's stages produce, for run_job to record."""

    metrics: dict[str, float] = field(default_factory=dict)
    data_report: dict = field(default_factory=dict)
    eval_during: list[dict] | None = None
    training_health: dict | None = None  # medgrpo/health.py, after GRPO
    grpo_config: dict | None = None  # the GRPOConfig the trainer held (after Unsloth's patches)
    gpu: dict | None = None  # the CUDA device and its free memory right before the weights loaded (host.gpu)


def run_job(cfg: DictConfig) -> float | list[float] | None:
    if not is_main_process():
        return _run_worker(cfg)
    try:
        with hold_job_folder(Path(cfg.paths.output_dir)), stop_signals():
            return _run_job_in_folder(cfg)
    except JobFolderBusy as error:  # refused before anything is written: the folder's files are the other job's
        log.error("%s", error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None
        raise SystemExit(2) from None


def _run_job_in_folder(cfg: DictConfig) -> float | list[float] | None:
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    overrides, name, group, multirun = _job_identity(cfg)
    config_checks.adopt_trained_job(cfg, overrides)  # eval.adapter_path=<job dir>: evaluate it as it was trained
    resolved = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    results: dict = {
        "status": "running",
        "pid": os.getpid(),
        "host": {"name": socket.gethostname(), "python": platform.python_version(), "machine": platform.machine(),
                 "processes": int(os.environ.get("WORLD_SIZE", "1"))},
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "overrides": overrides,
        "seed": cfg.seed,
        "config": resolved,
        "metrics": {},
        "accuracy_ci_method": ACCURACY_CI_METHOD,  # how eval/<dataset>/accuracy_ci_low/high are computed
    }
    if not cfg.train.rerun and (done := finished_result(output_dir, resolved)) is not None:
        values = _objective_values(cfg, done.get("metrics") or {}, strict=False)
        if values is not None:
            log.info("Job already done in %s (results.json ok, same config): skipped; train.rerun=true runs it "
                     "again", output_dir)
            mark_skipped(output_dir, done)
            return values
    timings: dict[str, float] = {}
    tracker = judge = None
    try:
        if not multirun:
            _fall_back_to_a_written_objective(cfg)
        config_checks.validate(cfg)
        config_checks.check_model_available(cfg.model)
        results["cpu"] = use_threads(cfg.cpu).as_dict()  # torch's threads: the cores this job has, not the machine's
        resume_plan = _plan_resume(cfg, output_dir)  # a checkpoint of another config is refused here
        results["resumed_from"] = resume_plan.step
        write_json_atomic(output_dir / "results.json", results)  # status running: a sweep summary can see it
        from medgrpo.tracking import start_tracking

        tracker = start_tracking(cfg.logger, resolved, output_dir, name, group)
        results["wandb"] = tracker.describe()
        judge = _judge(cfg)
        output = _run(cfg, output_dir, tracker, timings, judge, resume_plan)
        results.update(metrics=output.metrics, data=output.data_report, status="ok")
        if output.eval_during is not None:
            results["eval_during"] = output.eval_during
        if output.training_health is not None:
            results["training_health"] = output.training_health
        if output.grpo_config is not None:
            results["grpo_config"] = output.grpo_config
        if output.gpu is not None:
            results["host"]["gpu"] = output.gpu
        values = _objective_values(cfg, output.metrics)
        tracker.summary({"objective": values})
        return values
    except JobInterrupted as stop:
        results.update(status="interrupted", error=str(stop), last_step=stop.step, checkpoint=stop.checkpoint)
        log.error("Job %s; the same command resumes it", stop)
        raise SystemExit(128 + stop.signum) from None
    except Exception as error:
        results["status"] = "failed"
        results["error"] = f"{type(error).__name__}: {error}"
        results["traceback"] = traceback.format_exc()
        if multirun:
            log.error("Job failed: %s", results["error"])
            return None
        if isinstance(error, MedgrpoError) and os.environ.get("HYDRA_FULL_ERROR") != "1":
            # A user's mistake: one line naming the key, not a stack trace (HYDRA_FULL_ERROR=1 shows it).
            log.error("%s", error)
            raise SystemExit(2) from None
        log.error("Job failed: %s", results["error"])
        raise
    finally:
        defer_signals()  # a signal now must not cut the writing of results.json short
        timings["total_s"] = time.time() - started
        results["timings"] = timings
        if judge is not None:  # also when the job failed: how many calls failed is the first thing to look at
            results["judge"] = judge.stats.as_dict()
            judge.close()
        write_json_atomic(output_dir / "results.json", results)
        if tracker is not None:
            tracker.finish(failed=results["status"] != "ok")


def _objective_values(cfg: DictConfig, metrics: dict, strict: bool = True) -> float | list[float] | None:
    """The objective(s) a sweeper gets from these metrics; a missing or non-finite one raises (or is None)."""
    values = []
    for key in objective_keys(cfg):
        value = metrics.get(key)
        if value is None or not math.isfinite(value):
            if not strict:
                return None
            raise ValueError(f"objective '{key}' is {value!r} after the run; available: "
                             f"{sorted(k for k in metrics if k.startswith(('eval/', 'train/')))[:20]}")
        values.append(value)
    return values[0] if len(values) == 1 else values


def _plan_resume(cfg: DictConfig, output_dir: Path) -> ResumePlan:
    """Where training continues from (train.resume), checked against this job's model and LoRA."""
    from medgrpo.backends import LoraSpec
    from medgrpo.resume import ResumePlan, checkpoint_identity, plan_resume

    identity = checkpoint_identity(cfg.model, LoraSpec.from_config(cfg.lora))
    if not cfg.train.enabled:
        return ResumePlan(None, identity)
    return plan_resume(cfg.train.resume, output_dir / "checkpoints", identity)


def _fall_back_to_a_written_objective(cfg: DictConfig) -> None:
    """A single run returns its objective to nobody: rather than fail a job over an objective it never writes
    (evaluation switched off, another data.eval), use the training reward (a sweep is refused instead)."""
    unwritten = unproduced_objectives(cfg)
    if unwritten and cfg.train.enabled and not isinstance(cfg.objective, ListConfig):
        key, why = unwritten[0]
        log.warning("objective %s is never written (%s): using train/reward instead", key, why)
        with open_dict(cfg):
            cfg.objective = "train/reward"


def _run_worker(cfg: DictConfig) -> None:
    """A non-main process of a multi-process run: it trains its data shard and leaves the rest to rank 0."""
    from medgrpo.tracking import NullTracker

    config_checks.validate(cfg)
    use_threads(cfg.cpu)
    output_dir = Path(cfg.paths.output_dir)
    _run(cfg, output_dir, NullTracker(), {}, _judge(cfg), _plan_resume(cfg, output_dir))


def _judge(cfg: DictConfig):
    """The LLM judge when a configured reward calls it (its key was checked by validate), else None."""
    from medgrpo import rewards

    if not rewards.needs_judge(cfg.reward):
        return None
    from medgrpo.judge import Judge

    return Judge.from_config(cfg.judge)


@contextmanager
def _timed(timings: dict, key: str):
    start = time.time()
    try:
        yield
    finally:
        timings[key] = time.time() - start


def _run(cfg: DictConfig, output_dir: Path, tracker, timings: dict, judge=None,
         resume_plan: ResumePlan | None = None) -> JobOutput:
    """The job's stages, top to bottom; each helper gets the config groups it uses."""
    import transformers

    from medgrpo import data, rewards
    from medgrpo.backends import LoraSpec, load_policy, resolve_backend, resolve_model_path
    from medgrpo.backends.hf import load_tokenizer
    from medgrpo.backends.vllm_engines import check_vllm_rollouts
    from medgrpo.evaluation.budget import Budget
    from medgrpo.evaluation.engine import check_engine_request, choose_engine, has_vllm_engine
    from medgrpo.evaluation.runner import EvalRunner
    from medgrpo.evaluation.safety import SafetyRules
    from medgrpo.prompting import PromptFormat
    from medgrpo.sft import check_sft_trainer, job_stages

    transformers.set_seed(cfg.seed)
    lora = LoraSpec.from_config(cfg.lora)
    backend = resolve_backend(cfg.backend, lora)
    use_vllm = backend == "unsloth" and bool(cfg.backend.fast_inference)  # what the loaded model should support
    stages = job_stages(cfg.stage, cfg.train.enabled)  # [] for an evaluation-only job
    if "sft" in stages:
        check_sft_trainer(cfg.stage.sft.trainer)
    if "grpo" in stages:
        from medgrpo.train import check_grpo_for_backend

        check_grpo_for_backend(cfg.grpo, backend, use_vllm)
    prompt_format = PromptFormat.from_config(cfg.prompt)
    reward_funcs, reward_weights = rewards.build_reward_functions(cfg.reward, prompt_format, judge)
    output = JobOutput()

    # Data before the model: a bad dataset fails in seconds, not after loading weights.
    with _timed(timings, "data_s"):
        model_path = resolve_model_path(cfg.model)
        vllm_eval = check_engine_request(cfg.eval.engine, backend, cfg.backend, lora, cfg.eval.adapter_path,
                                         cfg.model, model_path)  # the hf backend's own vLLM engine for evaluation
        check_vllm_rollouts(cfg.grpo if "grpo" in stages else None, cfg.backend, backend, lora, cfg.eval.adapter_path,
                            cfg.model, model_path)
        tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
        # Prompt budgets follow the stage: evaluation prompts leave room for the evaluation's longest completion,
        # GRPO prompts for grpo.max_completion_length; a job without GRPO is not limited by the latter.
        budget = Budget.from_config(cfg.budget, cfg.eval.max_new_tokens)
        eval_prompt_tokens = _prompt_budget(cfg.model.max_seq_length, "eval.max_new_tokens",
                                            budget.max_completion_tokens(tokenizer, prompt_format.think_close))
        eval_sets, eval_report = data.prepare_eval(cfg.data, tokenizer, prompt_format, eval_prompt_tokens,
                                                   limit=cfg.eval.limit)
        output.data_report = {"eval": eval_report}
        train_set = None
        if "grpo" in stages:
            max_prompt_tokens = _prompt_budget(cfg.model.max_seq_length, "grpo.max_completion_length",
                                               cfg.grpo.max_completion_length)
            train_set, train_report = data.prepare_train(cfg.data, tokenizer, prompt_format, cfg.seed,
                                                         max_prompt_tokens)
            rewards.check_rewards_applicable(cfg.reward, train_set.column_names)
            output.data_report["train"] = train_report  # the train report has the leakage check
        if use_vllm or vllm_eval:
            budget.check_fits(tokenizer, prompt_format.think_close, eval_sets, cfg.model.max_seq_length)

    with _timed(timings, "model_load_s"):
        policy = load_policy(backend, cfg.model, lora, backend_cfg=cfg.backend, model_path=model_path,
                             tokenizer=tokenizer, adapter_path=cfg.eval.adapter_path,
                             trainable=bool(stages), seed=cfg.seed, vllm_eval=vllm_eval)
    output.gpu = policy.gpu
    # Unsloth falls back to its own generation where vLLM cannot run
    use_vllm = policy.backend == "unsloth" and has_vllm_engine(policy)
    evaluator = EvalRunner(cfg.eval, choose_engine(cfg.eval.engine, policy), policy, eval_sets, budget,
                           prompt_format, tracker,
                           output_dir, SafetyRules.from_config(cfg.safety))
    main = is_main_process()
    if cfg.eval.before_training and main:
        with _timed(timings, "eval_before_s"):
            output.metrics.update(evaluator.run(prefix="eval_base", step=0, predictions_subdir="predictions_base"))
    if "sft" in stages:
        from medgrpo.sft import run_sft

        with _timed(timings, "sft_s"):
            sft_metrics, output.data_report["sft"] = run_sft(
                cfg.stage.sft, cfg.data, policy, prompt_format, lora, Path(cfg.paths.cache_dir) / "sft", output_dir,
                tracker.report_to)
            output.metrics.update(sft_metrics)
        if stages == ["sft"] and main:  # the job's weights where export, predict and chat look for them
            policy.model.save_pretrained(output_dir / "adapter")
            policy.tokenizer.save_pretrained(output_dir / "adapter")
        if "grpo" in stages and cfg.eval.after_training and main:  # between the stages; `eval/` is the final one
            with _timed(timings, "eval_sft_s"):
                output.metrics.update(evaluator.run(prefix="eval_sft", step=0, predictions_subdir="predictions_sft"))
    if "grpo" in stages:
        from medgrpo.train import train

        with _timed(timings, "train_s"):
            trained = train(cfg.grpo, policy, train_set, reward_funcs, reward_weights, output_dir,
                            tracker.report_to, seed=cfg.seed, use_vllm=use_vllm,
                            callbacks=evaluator.callbacks() if main else [], resume=resume_plan)
            output.metrics.update(trained)
            output.grpo_config = trained.grpo_config
        output.eval_during = evaluator.history
    if cfg.eval.after_training and main:
        with _timed(timings, "eval_s"):
            step = int(output.metrics.get("train/steps", output.metrics.get("train_sft/steps", 0)))
            output.metrics.update(evaluator.run(prefix="eval", step=step, predictions_subdir="predictions"))
    if "grpo" in stages and main:
        output.training_health = _training_health(cfg.health, output_dir, output.metrics, evaluator.history, tracker)
    return output


def _prompt_budget(max_seq_length: int, completion_key: str, completion_tokens: int) -> int:
    room = max_seq_length - completion_tokens
    if room <= 0:
        raise ConfigError("model.max_seq_length", f"{max_seq_length} leaves no room for prompts after "
                          f"{completion_key}'s {completion_tokens} completion tokens")
    return room


def _training_health(health_cfg: DictConfig, output_dir: Path, metrics: dict, eval_during: list[dict],
                     tracker) -> dict:
    """The GRPO run's training_health block (also in the W&B summary), from its log and its evaluations in order."""
    import json

    from medgrpo import health

    history = [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines() if line]
    # GRPO starts from the SFT weights when SFT ran, else from the base model
    start = "eval_sft/" if any(k.startswith("eval_sft/") for k in metrics) else "eval_base/"
    evaluations = [(0, {k: v for k, v in metrics.items() if k.startswith(start)})]
    evaluations += [(e["step"], e) for e in eval_during]
    final = {k: v for k, v in metrics.items() if k.startswith("eval/")}
    evaluations.append((int(metrics.get("train/steps", 0)), final))
    block = health.training_health(history, health.eval_points(evaluations), health_cfg)
    tracker.summary(health.flat_summary(block))
    return block
