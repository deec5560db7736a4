"""Runs evaluations for a job: picks the engine, evaluates before/during/after training, logs to the tracker."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

from transformers import TrainerCallback

from medgrpo.evaluation.budget import Budget
from medgrpo.evaluation.engine import HFEngine, VLLMEngine
from medgrpo.evaluation.evaluate import evaluate
from medgrpo.evaluation.metrics import source_table
from medgrpo.evaluation.safety import SafetyRules, safety_metrics

log = logging.getLogger(__name__)


class EvalRunner:
    def __init__(self, eval_cfg, engine_name: str, policy, eval_sets: dict, budget: Budget, prompt_format, tracker,
                 output_dir: Path, safety_rules: SafetyRules | None = None):
        self.eval_cfg = eval_cfg
        # Open-answer sets are measured by the safety rules (conf/safety/) instead of accuracy.
        self.open_metrics = None if safety_rules is None else functools.partial(
            safety_metrics, rules=safety_rules, think_open=prompt_format.think_open,
            think_close=prompt_format.think_close)
        self.engine_name = engine_name
        self.policy = policy
        self.eval_sets = eval_sets
        self.budget = budget
        self.think_close = prompt_format.think_close
        self.tracker = tracker
        self.output_dir = output_dir
        self.history: list[dict] = []

    def _engine(self):
        if self.engine_name == "vllm":  # generates with the weights the policy holds now, saved for vLLM
            return VLLMEngine(self.policy)
        return HFEngine(self.policy.model, self.policy.tokenizer, self.eval_cfg.batch_size)

    def run(self, prefix: str, step: int, predictions_subdir: str | None, limit: int | None = None) -> dict:
        sets = self.eval_sets if limit is None else {
            name: ds.select(range(min(limit, len(ds)))) for name, ds in self.eval_sets.items()}
        metrics, predictions = evaluate(
            sets, self.policy.tokenizer, self._engine(), self.eval_cfg, self.budget, self.think_close,
            prefix, self.output_dir / predictions_subdir if predictions_subdir else None, self.open_metrics,
        )
        self.tracker.log({**metrics, "train/global_step": step})
        for name, rows in predictions.items():
            sample = [{k: row[k] for k in ("id", "completion", "extracted", "answer", "correct", "thinking_tokens")}
                      for row in rows[: self.eval_cfg.num_table_rows]]
            # One table per evaluation and step: later evaluations never overwrite earlier ones.
            self.tracker.log_table(f"completions/{prefix}/{name}/step_{step}", sample)
            by_source = source_table(metrics, f"{prefix}/{name}/by_source/")
            if by_source:
                self.tracker.log_table(f"by_source/{prefix}/{name}/step_{step}", by_source)
        return metrics

    def callbacks(self) -> list[TrainerCallback]:
        every = self.eval_cfg.during_training_steps
        return [DuringTrainingEval(self, every, self.eval_cfg.during_training_limit)] if every > 0 else []


class DuringTrainingEval(TrainerCallback):
    """Task accuracy on a fixed subset every N steps (GRPOTrainer's own eval reports sampled rewards only)."""

    def __init__(self, runner: EvalRunner, every: int, limit: int):
        self.runner, self.every, self.limit = runner, every, limit

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            metrics = self.runner.run("eval_during", state.global_step, None, limit=self.limit)
            self.runner.history.append({"step": state.global_step, **metrics})
        return control
