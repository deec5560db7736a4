"""One job, start to end: validate -> data -> model -> (eval before) -> GRPO -> eval -> results.json.

Called by src/run.py with the composed Hydra config; returns the objective for sweepers. Every job leaves a
results.json (status ok or failed, written atomically). A failed single run raises (non-zero exit); a failed job
inside a sweep is recorded and returns None, so the sweep goes on and Optuna marks the trial FAIL.
"""
from __future__ import annotations

import logging
import math
import os
import platform
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from medgrpo import config as config_checks
from medgrpo.config import check_objective, objective_keys
from medgrpo.errors import ConfigError
from medgrpo.results import redact_secrets, write_json_atomic

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


def run_job(cfg: DictConfig) -> float | list[float] | None:
    if not is_main_process():
        return _run_worker(cfg)
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    overrides, name, group, multirun = _job_identity(cfg)
    resolved = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    results: dict = {
        "status": "running",
        "overrides": overrides,
        "seed": cfg.seed,
        "config": resolved,
        "metrics": {},
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "processes": int(os.environ.get("WORLD_SIZE", "1"))},
    }
    timings: dict[str, float] = {}
    tracker = None
    try:
        config_checks.validate(cfg)
        from medgrpo.tracking import start_tracking

        tracker = start_tracking(cfg.logger, resolved, output_dir, name, group)
        results["wandb"] = tracker.describe()
        metrics = _run(cfg, output_dir, tracker, timings, results)
        results["metrics"] = metrics
        results["status"] = "ok"
        values = []
        for key in objective_keys(cfg):
            value = metrics.get(key)
            if value is None or not math.isfinite(value):
                raise ValueError(f"objective '{key}' is {value!r} after the run; available: "
                                 f"{sorted(k for k in metrics if k.startswith(('eval/', 'train/')))[:20]}")
            values.append(value)
        tracker.summary({"objective": values[0] if len(values) == 1 else values})
        return values[0] if len(values) == 1 else values
    except Exception as error:
        results["status"] = "failed"
        results["error"] = f"{type(error).__name__}: {error}"
        results["traceback"] = traceback.format_exc()
        log.error("Job failed: %s", results["error"])
        if not multirun:
            raise
        return None
    finally:
        timings["total_s"] = time.time() - started
        results["timings"] = timings
        write_json_atomic(output_dir / "results.json", results)
        if tracker is not None:
            tracker.finish(failed=results["status"] != "ok")


def _run_worker(cfg: DictConfig) -> None:
    """A non-main process of a multi-process run: it trains its data shard and leaves the rest to rank 0."""
    from medgrpo.tracking import NullTracker

    config_checks.validate(cfg)
    _run(cfg, Path(cfg.paths.output_dir), NullTracker(), {}, {})


@contextmanager
def _timed(timings: dict, key: str):
    start = time.time()
    try:
        yield
    finally:
        timings[key] = time.time() - start


def _run(cfg: DictConfig, output_dir: Path, tracker, timings: dict, results: dict) -> dict[str, float]:
    import transformers

    from medgrpo import data, rewards
    from medgrpo.backends import load_policy, resolve_backend, resolve_model_path
    from medgrpo.backends.hf import load_tokenizer
    from medgrpo.evaluation.budget import Budget
    from medgrpo.evaluation.runner import EvalRunner
    from medgrpo.prompting import PromptFormat

    transformers.set_seed(cfg.seed)
    backend = resolve_backend(cfg)
    prompt_format = PromptFormat.from_config(cfg.prompt)
    reward_funcs, reward_weights = rewards.build_reward_functions(cfg.reward, prompt_format)

    # Data before the model: a bad dataset fails in seconds, not after loading weights.
    with _timed(timings, "data_s"):
        model_path = resolve_model_path(cfg.model)
        tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
        max_prompt_tokens = cfg.model.max_seq_length - cfg.grpo.max_completion_length
        if max_prompt_tokens <= 0:
            raise ConfigError("model.max_seq_length", f"{cfg.model.max_seq_length} leaves no room for prompts after "
                              f"grpo.max_completion_length={cfg.grpo.max_completion_length}")
        eval_sets, eval_report = data.prepare_eval(cfg.data, tokenizer, prompt_format, max_prompt_tokens,
                                                   limit=cfg.eval.limit)
        check_objective(cfg, list(eval_sets))
        train_set = None
        if cfg.train.enabled:
            train_set, train_report = data.prepare_train(cfg.data, tokenizer, prompt_format, cfg.seed,
                                                         max_prompt_tokens)
            rewards.check_rewards_applicable(cfg.reward, train_set.column_names)
            results["data"] = {"train": train_report, "eval": eval_report}  # the train report has the leakage check
        else:
            results["data"] = {"eval": eval_report}

    with _timed(timings, "model_load_s"):
        policy = load_policy(cfg, backend, model_path, adapter_path=cfg.eval.adapter_path)
    evaluator = EvalRunner(cfg, policy, eval_sets, Budget.from_config(cfg.budget, cfg.eval.max_new_tokens),
                           prompt_format, tracker, output_dir)
    metrics: dict[str, float] = {}
    main = is_main_process()
    if cfg.eval.before_training and main:
        with _timed(timings, "eval_before_s"):
            metrics.update(evaluator.run(prefix="eval_base", step=0, predictions_subdir="predictions_base"))
    if cfg.train.enabled:
        from medgrpo.train import train

        with _timed(timings, "train_s"):
            metrics.update(train(cfg, policy, train_set, reward_funcs, reward_weights, output_dir,
                                 tracker.report_to, callbacks=evaluator.callbacks() if main else []))
        results["eval_during"] = evaluator.history
    if cfg.eval.after_training and main:
        with _timed(timings, "eval_s"):
            step = int(metrics.get("train/steps", 0))
            metrics.update(evaluator.run(prefix="eval", step=step, predictions_subdir="predictions"))
    return metrics
