"""The two entry points the trainer calls: the training mix and the evaluation sets, with reports.

    train, report = prepare_train(cfg.data, tokenizer, prompt_format, seed=cfg.seed, max_prompt_tokens=1024)
    evals, report = prepare_eval(cfg.data, tokenizer, prompt_format, max_prompt_tokens=1024, limit=cfg.eval.limit)

Per training source: read (hub or local files) -> normalise and validate rows -> id filters -> max_items
(seeded) -> label balance and a seeded shuffle -> render chat prompts and drop those over the token budget
(real tokenizer and chat template; only as many as the mix can draw are checked) -> weighted, seeded interleave.
The training pools are checked against every evaluation set in data.eval for leakage (by id and question text)
before anything is returned. Results are cached on disk (data.cache_dir) under a key of the config, file
contents and tokenizer, so a second run with the same inputs starts in well under a second.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, List, Value

from medgrpo.errors import ConfigError
from medgrpo.prompting import PromptFormat

from . import cache
from .leakage import check_leakage
from .mix import balanced_order, label_counts, mix_sources, rows_needed
from .normalize import check_bad_rows, normalize_source
from .readers import read_source
from .render import check_losses, prompts_within_budget
from .spec import META_FIELDS, DataPlan, SourceSpec, validate_data_config

log = logging.getLogger(__name__)

FEATURES = Features({
    "id": Value("string"),
    "source": Value("string"),
    "prompt": List({"role": Value("string"), "content": Value("string")}),
    "question": Value("string"),
    "answer": Value("string"),
    "answer_type": Value("string"),
    "choices": List(Value("string")),
    "meta": {key: Value("string") for key in META_FIELDS},  # item metadata (null where a source has none)
})
EVAL_SHUFFLE_SEED = 0  # eval subsets (limit, max_items) are the same items whatever the training seed
MAX_MIX_ATTEMPTS = 3


def load_normalized(spec: SourceSpec, seed: int, max_bad_fraction: float) -> tuple[dict[str, list], dict]:
    """Rows of one source in the schema (plus context), max_items applied after a seeded shuffle; too many bad
    rows skipped fail (data.max_bad_row_fraction)."""
    columns, report = normalize_source(spec, read_source(spec))
    check_bad_rows(report, spec.name, max_bad_fraction)
    report["loaded"] = report.pop("rows_read")
    if spec.max_items is not None and spec.max_items < len(columns["id"]):
        keep = sorted(np.random.default_rng(seed).permutation(len(columns["id"]))[: spec.max_items].tolist())
        columns = {k: [v[i] for i in keep] for k, v in columns.items()}
        report["after_max_items"] = spec.max_items
    return columns, report


def to_dataset(columns: dict[str, list], kept: list[int], prompts: list[list[dict]]) -> Dataset:
    """Rows `kept` of `columns` with their prompts, as a Dataset with FEATURES (built in Arrow: fast)."""
    arrays = {k: [columns[k][i] for i in kept] for k in FEATURES if k not in ("prompt", "meta")}
    arrays["prompt"] = prompts
    arrays["meta"] = [columns["meta"][i] for i in kept] if "meta" in columns else [None] * len(kept)
    schema = FEATURES.arrow_schema
    table = pa.table({k: pa.array(arrays[k], type=schema.field(k).type) for k in FEATURES}, schema=schema)
    return Dataset(table)


def _payload(plan: DataPlan, names, prompt_format: PromptFormat, **extra) -> tuple[dict, list]:
    sources = {n: plan.sources[n] for n in names}
    files = [p for s in sources.values() for p in (*s.local_files, s.include_ids, s.exclude_ids) if p is not None]
    payload = {"sources": {n: s.raw for n, s in sources.items()},
               "prompt": [prompt_format.system, prompt_format.think_tag],
               "length_filter": [plan.warn_drop_fraction, plan.max_drop_fraction], **extra}
    return payload, files


def _exhausted_early(effective: dict[str, int], pools: dict[str, Dataset], truncated: set[str],
                     strategy: str) -> list[str]:
    """Truncated pools that the mix ran dry (it would have drawn more of them had they been complete)."""
    if strategy != "first_exhausted":
        return []
    return [n for n in truncated if effective[n] >= len(pools[n])]


def _cached(kind: str, plan: DataPlan, payload: dict, files: list, tokenizer, build):
    """build() -> (data, report), memoised on disk under a key of the payload, file contents and tokenizer.
    The report gains cache (hit/miss/off), cache_key and seconds; a miss returns the memory-mapped copy, exactly
    what a warm start returns."""
    started = time.perf_counter()
    if not plan.cache:
        data, report = build()
        report.update(cache="off", cache_key=None, seconds=round(time.perf_counter() - started, 2))
        return data, report
    key = cache.cache_key(kind, payload, files, tokenizer)
    with cache.building(plan.cache_dir, key):  # a second job preparing the same data waits, then reads it
        if hit := cache.load_cached(plan.cache_dir, key):
            data, report = hit
            report.update(cache="hit", cache_key=key, seconds=round(time.perf_counter() - started, 2))
            log.info("%s data from cache %s", kind, key)
            return data, report
        data, report = build()
        cache.store(plan.cache_dir, key, data, report)
    data = cache.load_cached(plan.cache_dir, key)[0]
    report.update(cache="miss", cache_key=key, seconds=round(time.perf_counter() - started, 2))
    return data, report


def prepare_train(data_cfg, tokenizer, prompt_format: PromptFormat, seed: int,
                  max_prompt_tokens: int | None) -> tuple[Dataset, dict]:
    """The weighted training mix (rows in the project schema) and its report (per-source counts, losses,
    label counts before/after balancing, effective mixed counts, leakage check, cache hit)."""
    plan = validate_data_config(data_cfg)
    if not plan.mix:
        raise ConfigError("data.mix", "no training source has a positive weight")
    payload, files = _payload(plan, [*plan.mix, *plan.eval], prompt_format, kind="train", seed=seed,
                              mix=plan.mix, eval=plan.eval, train_size=plan.train_size,
                              stopping=plan.stopping_strategy, balance=plan.balance,
                              allow_leakage=plan.allow_leakage, max_prompt_tokens=max_prompt_tokens,
                              near_duplicate_threshold=plan.near_duplicate_threshold)

    def build():
        columns, orders, per_source = _read_balanced(plan, seed)
        leakage = _check_pool_leakage(plan, columns, orders)
        mixed, pools, effective = _filter_and_mix(plan, columns, orders, per_source, prompt_format, tokenizer,
                                                  max_prompt_tokens, seed)
        _report_mix(per_source, pools, effective, mixed, plan)
        return mixed, {"sources": per_source, "mixed_total": len(mixed), "stopping_strategy": plan.stopping_strategy,
                       "train_size": plan.train_size, "max_prompt_tokens": max_prompt_tokens, "leakage": leakage,
                       "seed": seed}

    return _cached("train", plan, payload, files, tokenizer, build)


def _read_balanced(plan: DataPlan, seed: int) -> tuple[dict[str, dict[str, list]], dict[str, list[int]], dict]:
    """Read and normalise each training source, and order its rows (label balance + seeded shuffle)."""
    columns: dict[str, dict[str, list]] = {}
    orders: dict[str, list[int]] = {}
    per_source: dict[str, dict] = {}
    for k, name in enumerate(plan.mix):
        spec = plan.sources[name]
        columns[name], entry = load_normalized(spec, seed, plan.max_bad_row_fraction)
        entry = {"weight": round(plan.mix[name], 6), **entry}
        if spec.answer_type != "numeric":
            entry["label_counts"] = label_counts(columns[name]["answer"])
        mode = plan.balance.get(name, "none")
        orders[name] = balanced_order(columns[name]["answer"], mode, np.random.default_rng([seed, k]))
        if mode != "none":
            entry["balance"] = mode
            entry["after_balance"] = len(orders[name])
        per_source[name] = entry
    return columns, orders, per_source


def _check_pool_leakage(plan: DataPlan, columns: dict[str, dict[str, list]], orders: dict[str, list[int]]) -> dict:
    """Whole training pools against the full evaluation sets (not an eval.limit subset): any seed's mix and any
    later subset are then clean too. Needs no tokenizer, so it runs before the length filter."""
    evals = {name: normalize_source(plan.sources[name], read_source(plan.sources[name]))[0] for name in plan.eval}
    read = ("id", "source", "question", "choices")  # choices: options count in near duplicates, in any order
    train_union = {k: [v for n in plan.mix for v in (columns[n][k][i] for i in set(orders[n]))] for k in read}
    return check_leakage(train_union, {n: {k: c[k] for k in read} for n, c in evals.items()},
                         allow=plan.allow_leakage, namespaces={n: s.id_namespace for n, s in plan.sources.items()},
                         near_duplicate_threshold=plan.near_duplicate_threshold)


def _filter_and_mix(plan: DataPlan, columns, orders, per_source: dict, prompt_format: PromptFormat, tokenizer,
                    max_prompt_tokens: int | None, seed: int) -> tuple[Dataset, dict[str, Dataset], dict[str, int]]:
    """Render prompts, drop those over the token budget (only as many rows as the mix can draw are checked), and
    interleave the pools by weight. Retries with a wider margin when a draw ran a partly checked pool dry."""
    sizes = {n: len(orders[n]) for n in plan.mix}
    margin = 1.0
    for _ in range(MAX_MIX_ATTEMPTS):
        needed = rows_needed(sizes, plan.mix, plan.stopping_strategy, plan.train_size, margin)
        pools: dict[str, Dataset] = {}
        for name in plan.mix:
            want = needed[name] if needed[name] < sizes[name] else None
            kept, prompts, length_report = prompts_within_budget(columns[name], orders[name], plan.sources[name],
                                                                 prompt_format, tokenizer, max_prompt_tokens, want)
            check_losses(length_report, name, plan.warn_drop_fraction, plan.max_drop_fraction)
            pools[name] = to_dataset(columns[name], kept, prompts)
            per_source[name]["length_filter"] = length_report
        truncated = {n for n in plan.mix if per_source[n]["length_filter"]["not_checked"] > 0}
        mixed, effective = mix_sources(pools, plan.mix, seed, plan.stopping_strategy, plan.train_size)
        if not _exhausted_early(effective, pools, truncated, plan.stopping_strategy):
            break
        margin *= 2
    return mixed, pools, effective


def _report_mix(per_source: dict, pools: dict[str, Dataset], effective: dict[str, int], mixed: Dataset,
                plan: DataPlan) -> None:
    """Per-source kept/mixed counts into the report, and one log line per source."""
    for name, count in effective.items():
        entry = per_source[name]
        entry["kept"] = len(pools[name])
        if entry.get("label_counts"):
            entry["label_counts_kept"] = label_counts(pools[name]["answer"][:])
        entry["mixed"] = count
        entry["mixed_fraction"] = round(count / max(len(mixed), 1), 4)
        log.info("source %s: %d loaded, %d usable, %d kept after the length filter (%d checked), %d in the mix%s",
                 name, entry["loaded"], entry["normalized"], entry["kept"], entry["length_filter"]["checked"], count,
                 f"; labels {entry['label_counts']}" if entry.get("label_counts") else "")
    log.info("training mix: %d rows %s (weights %s)", len(mixed), effective, plan.mix)


def prepare_eval(data_cfg, tokenizer, prompt_format: PromptFormat, max_prompt_tokens: int | None,
                 limit: int | None = None) -> tuple[dict[str, Dataset], dict]:
    """Evaluation sets keyed by source name (data.eval), rows in the project schema, and a report.

    limit caps the items per set: the first N of a fixed seeded shuffle (the same items for every run).
    """
    plan = validate_data_config(data_cfg)
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ConfigError("eval.limit", f"must be a positive integer or null, got {limit!r}")
    payload, files = _payload(plan, plan.eval, prompt_format, kind="eval", eval=plan.eval, limit=limit,
                              max_prompt_tokens=max_prompt_tokens)

    def build():
        evals: dict[str, Dataset] = {}
        per_source: dict[str, dict] = {}
        for name in plan.eval:
            evals[name], per_source[name] = _eval_set(plan.sources[name], prompt_format, tokenizer,
                                                      max_prompt_tokens, limit, plan)
        return DatasetDict(evals), {"sources": per_source, "max_prompt_tokens": max_prompt_tokens, "limit": limit}

    evals, report = _cached("eval", plan, payload, files, tokenizer, build)
    return dict(evals), report


def _eval_set(spec: SourceSpec, prompt_format: PromptFormat, tokenizer, max_prompt_tokens: int | None,
              limit: int | None, plan: DataPlan) -> tuple[Dataset, dict]:
    """One evaluation set: a fixed seeded order, the length filter, then the first `limit` items."""
    columns, entry = load_normalized(spec, EVAL_SHUFFLE_SEED, plan.max_bad_row_fraction)
    order = np.random.default_rng(EVAL_SHUFFLE_SEED).permutation(len(columns["id"])).tolist()
    kept, prompts, length_report = prompts_within_budget(columns, order, spec, prompt_format, tokenizer,
                                                         max_prompt_tokens)
    check_losses(length_report, spec.name, plan.warn_drop_fraction, plan.max_drop_fraction)
    entry["length_filter"] = length_report
    if limit is not None and limit < len(kept):
        kept, prompts = kept[:limit], prompts[:limit]
        entry["limit"] = limit
    ds = to_dataset(columns, kept, prompts)
    if spec.answer_type != "numeric":
        entry["label_counts"] = label_counts(ds["answer"][:])
        entry["majority_baseline"] = round(max(entry["label_counts"].values()) / len(ds), 4)
    entry["items"] = len(ds)
    return ds, entry
