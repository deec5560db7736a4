"""Evaluate a policy on the eval datasets: generate (with budget forcing), grade, write predictions, compute metrics.

The same function runs before training (the base model), during training (a fixed subset, from a callback)
and after training, so every delta comes from one harness.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from medgrpo.evaluation.budget import BudgetForcer
from medgrpo.evaluation.engine import Engine, Sampling
from medgrpo.evaluation.metrics import dataset_metrics, generation_metrics
from medgrpo.evaluation.robustness import map_back, permuted_items, robustness_metrics, shuffle_count
from medgrpo.grade import grade
from medgrpo.results import write_jsonl_atomic

log = logging.getLogger(__name__)


def evaluate_dataset(dataset, tokenizer, forcer: BudgetForcer, sampling: Sampling, num_samples: int) -> list[dict]:
    """Prediction rows (the predictions contract) for one dataset, num_samples rows per item."""
    prompts = [tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
               for row in dataset]
    prompt_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in prompts]
    repeated = [ids for ids in prompt_ids for _ in range(num_samples)]
    completions = forcer.run(repeated, sampling)
    rows = []
    for index, forced in enumerate(completions):
        item = dataset[index // num_samples]
        text = tokenizer.decode(forced.tokens, skip_special_tokens=True)
        graded = grade(text, item["answer"], item["answer_type"], item.get("choices") or None)
        rows.append({
            "id": item["id"],
            "sample": index % num_samples,
            "prompt": prompts[index // num_samples],
            "completion": text,
            "extracted": graded.extracted,
            "answer": item["answer"],
            "correct": graded.correct,
            "correct_strict": graded.correct_strict,
            "has_answer_block": graded.has_answer_block,
            "completion_tokens": len(forced.tokens),
            "thinking_tokens": forced.thinking_tokens,
            "waits": forced.waits,
            "forced_close": forced.forced_close,
            "truncated": forced.truncated,
            "meta": item.get("meta"),  # language, risk_level, expected_behavior: what the safety metrics read
        })
    return rows


def evaluate_shuffled(dataset, tokenizer, forcer: BudgetForcer, sampling: Sampling, k: int) -> list[dict]:
    """Prediction rows of every choice item under k permutations of its options, letters mapped back to the
    original options (medgrpo.evaluation.robustness)."""
    items = permuted_items(dataset, k)
    if not items:
        return []
    rows = evaluate_dataset(items, tokenizer, forcer, sampling, num_samples=1)
    return [{**map_back(row, item), "sample": index % k} for index, (row, item) in enumerate(zip(rows, items))]


def evaluate(eval_sets: dict, tokenizer, engine: Engine, eval_cfg, budget, think_close: str,
             prefix: str, predictions_dir: Path | None, open_metrics: Callable[[list[dict]], dict] | None = None
             ) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """Metrics named `<prefix>/<dataset>/<metric>` and the prediction rows per dataset. Open-answer sets have no
    accuracy: their metrics are generation_metrics plus open_metrics(rows) (the safety metrics)."""
    shuffles = shuffle_count(eval_cfg)
    forcer = BudgetForcer(engine, tokenizer, budget, think_close)
    sampling = Sampling(temperature=eval_cfg.temperature, top_p=eval_cfg.top_p)
    metrics: dict[str, float] = {}
    predictions: dict[str, list[dict]] = {}
    for name, dataset in eval_sets.items():
        log.info("Evaluating %s: %d items x %d samples (budget=%s)", name, len(dataset), eval_cfg.num_samples,
                 budget.mode)
        rows = evaluate_dataset(dataset, tokenizer, forcer, sampling, eval_cfg.num_samples)
        predictions[name] = rows
        graded = len(dataset) == 0 or dataset[0]["answer_type"] != "open"
        values = dataset_metrics(rows, eval_cfg.num_samples) if graded else {
            **generation_metrics(rows), **(open_metrics(rows) if open_metrics else {})}
        if shuffles and len(dataset) and dataset[0]["answer_type"] == "choice":
            log.info("%s: option-order robustness, %d permutations per item", name, shuffles)
            shuffled = evaluate_shuffled(dataset, tokenizer, forcer, sampling, shuffles)
            values.update(robustness_metrics(shuffled) if shuffled else {})
            log.info("%s: accuracy over %d option orders %.3f, same answer under all %.3f", name, shuffles,
                     values.get("shuffle_accuracy", math.nan), values.get("shuffle_consistency", math.nan))
            if predictions_dir is not None and shuffled:
                write_jsonl_atomic(predictions_dir / f"{name}.shuffled.jsonl", shuffled)
        for key, value in values.items():
            metrics[f"{prefix}/{name}/{key}"] = value
        if predictions_dir is not None:
            write_jsonl_atomic(predictions_dir / f"{name}.jsonl", rows)
        truncated = metrics[f"{prefix}/{name}/truncation_rate"]
        if graded:
            log.info("%s: accuracy %.3f [%.3f, %.3f] (strict %.3f, majority baseline %.3f), format %.2f, "
                     "truncated %.2f", name, metrics[f"{prefix}/{name}/accuracy"],
                     metrics[f"{prefix}/{name}/accuracy_ci_low"], metrics[f"{prefix}/{name}/accuracy_ci_high"],
                     metrics[f"{prefix}/{name}/accuracy_strict"], metrics[f"{prefix}/{name}/majority_baseline"],
                     metrics[f"{prefix}/{name}/format_rate"], truncated)
        else:
            log.info("%s (open answers): %s", name, ", ".join(
                f"{key} {value:.3f}" for key, value in values.items() if not key.endswith(("_n", "_low", "_high"))))
        if truncated > 0.1:
            log.warning("%s: %.0f%% of completions hit the token limit and were cut off: raise eval.max_new_tokens "
                        "(or the budget's max_answer_tokens) or their answers are missing", name, 100 * truncated)
    return metrics, predictions
