"""Source specs and data-config validation: everything that can be checked before a file or model is read.

A *source* is one YAML under conf/data/sources/, composed into `data.sources.<name>`; `data.mix` weights the
training sources and `data.eval` names the evaluation sources. `validate_data_config(cfg.data)` raises a
ConfigError naming the key (or a DataError naming the file) for anything wrong, so a sweep fails in seconds.
"""
from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from medgrpo.errors import ConfigError
from medgrpo.grading.labels import ANSWER_TYPES

ROLES = ("train", "eval")
LOCAL_FORMATS = ("jsonl", "json", "csv", "parquet")
EXTENSION_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "csv",
                     ".parquet": "parquet", ".pq": "parquet"}
BALANCE_MODES = ("none", "downsample", "upsample")
STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")
REQUIRED_FIELDS = ("question", "answer")
META_FIELDS = ("language", "risk_level", "specialty", "expected_behavior")  # the `meta` column's keys
KNOWN_FIELDS = ("id", "question", "answer", "context", "choices", "target", *META_FIELDS)  # target: SFT reasoning
TEMPLATE_SLOTS = ("question", "context", "options")
REPO_ROOT = Path(__file__).resolve().parents[3]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def root_dir(data_cfg) -> Path:
    """Relative paths in the data config resolve against data.root_dir (default: the repository root)."""
    root = data_cfg.get("root_dir") if data_cfg is not None else None
    return Path(root).resolve() if root else REPO_ROOT


def resolve_path(path: str, root: Path) -> Path:
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else root / p


@dataclass(frozen=True)
class SourceSpec:
    """One data source, parsed from data.sources.<name>."""

    name: str
    role: str
    answer_type: str
    template: str
    fields: dict[str, Any]
    hub: dict[str, Any]
    local_files: tuple[Path, ...] = ()
    local_format: str | None = None
    encoding: str | None = None
    csv_header: bool = True
    csv_columns: tuple[str, ...] | None = None
    options_in_question: bool = False
    answer_index_base: int = 0
    id_namespace: str | None = None
    include_ids: Path | None = None
    exclude_ids: Path | None = None
    max_context_chars: int | None = None
    max_items: int | None = None
    bad_rows: str = "error"
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_local(self) -> bool:
        return bool(self.local_files)

    @property
    def origin(self) -> str:
        if self.is_local:
            return ", ".join(str(p) for p in self.local_files)
        return f"hub {self.hub.get('path')} name={self.hub.get('name')} split={self.hub.get('split')}"


def parse_source(name: str, cfg, root: Path) -> SourceSpec:
    """Validate data.sources.<name> and return its SourceSpec (ConfigError naming the key on any problem)."""
    key = f"data.sources.{name}"
    raw = _plain(cfg)
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a mapping (a source YAML from conf/data/sources/)")

    def need(k: str, allowed=None):
        if raw.get(k) is None:
            raise ConfigError(f"{key}.{k}", "is required")
        if allowed and raw[k] not in allowed:
            raise ConfigError(f"{key}.{k}", f"{raw[k]!r} is not one of {', '.join(allowed)}")
        return raw[k]

    role = need("role", ROLES)
    answer_type = need("answer_type", ANSWER_TYPES)
    template = need("template")
    local = raw.get("local") or {}
    fields = dict(raw.get("fields") or {})
    fields.update(local.get("fields") or {})  # a local file layout may name the fields differently
    for f in REQUIRED_FIELDS:
        if not fields.get(f):
            raise ConfigError(f"{key}.fields.{f}", "is required (the column holding it)")
    unknown = set(fields) - set(KNOWN_FIELDS)
    if unknown:
        raise ConfigError(f"{key}.fields", f"unknown field role(s) {sorted(unknown)}; known: {KNOWN_FIELDS}")
    options_in_question = bool(raw.get("options_in_question", False))
    if answer_type == "choice" and not fields.get("choices") and not options_in_question:
        raise ConfigError(f"{key}.fields.choices", "a choice source needs choices (or options_in_question: true)")
    if answer_type != "choice" and (fields.get("choices") or options_in_question):
        raise ConfigError(f"{key}.fields.choices", f"only choice sources have options, not {answer_type}")
    for slot in _template_slots(template, f"{key}.template"):
        if slot == "context" and not fields.get("context"):
            raise ConfigError(f"{key}.template", "uses {context} but fields.context is not set")
        if slot == "options" and answer_type != "choice":
            raise ConfigError(f"{key}.template", "uses {options} but the source is not a choice source")

    local_files: tuple[Path, ...] = ()
    local_format = local.get("format")
    if local.get("path"):
        local_files = tuple(_expand_local(local["path"], root, f"{key}.local.path"))
        if local_format is None:
            formats = {EXTENSION_FORMATS.get(p.suffix.lower()) for p in local_files}
            if None in formats or len(formats) != 1:
                raise ConfigError(f"{key}.local.format", f"cannot tell the format of {[p.name for p in local_files]} "
                                  f"from the extension; set it to one of {', '.join(LOCAL_FORMATS)}")
            local_format = formats.pop()
        elif local_format not in LOCAL_FORMATS:
            raise ConfigError(f"{key}.local.format", f"{local_format!r} is not one of {', '.join(LOCAL_FORMATS)}")
    else:
        hub = raw.get("hub") or {}
        if not hub.get("path"):
            raise ConfigError(f"{key}.hub.path", "is required unless local.path is set")
        if not _as_list(hub.get("split")):
            raise ConfigError(f"{key}.hub.split", "is required (a split name or a list of them)")
    csv_columns = local.get("csv_columns")
    if local_format == "csv" and not local.get("csv_header", True) and not csv_columns:
        raise ConfigError(f"{key}.local.csv_columns", "a CSV without a header needs its column names")

    ids = raw.get("ids") or {}
    include = resolve_path(ids["include"], root) if ids.get("include") else None
    exclude = resolve_path(ids["exclude"], root) if ids.get("exclude") else None
    for id_key, path in (("include", include), ("exclude", exclude)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{key}.ids.{id_key}", f"id list file {path} does not exist")
    if (include or exclude) and not fields.get("id"):
        raise ConfigError(f"{key}.ids", "id filters need fields.id (the upstream id column)")

    bad_rows = raw.get("bad_rows", "error")
    if bad_rows not in ("error", "skip"):
        raise ConfigError(f"{key}.bad_rows", f"{bad_rows!r} is not one of error, skip")
    max_items = raw.get("max_items")
    if max_items is not None and (not isinstance(max_items, int) or max_items <= 0):
        raise ConfigError(f"{key}.max_items", f"must be a positive integer or null, got {max_items!r}")
    max_chars = (raw.get("filters") or {}).get("max_context_chars")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars <= 0):
        raise ConfigError(f"{key}.filters.max_context_chars", f"must be a positive integer or null, got {max_chars!r}")
    return SourceSpec(
        name=name, role=role, answer_type=answer_type, template=str(template), fields=fields,
        hub=dict(raw.get("hub") or {}), local_files=local_files, local_format=local_format,
        encoding=local.get("encoding"), csv_header=bool(local.get("csv_header", True)),
        csv_columns=tuple(csv_columns) if csv_columns else None, options_in_question=options_in_question,
        answer_index_base=int(raw.get("answer_index_base", 0)), id_namespace=ids.get("namespace"),
        include_ids=include, exclude_ids=exclude, max_context_chars=max_chars, max_items=max_items,
        bad_rows=bad_rows, raw=raw,
    )


def _template_slots(template: str, key: str) -> list[str]:
    import string

    try:
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ConfigError(key, f"is not a valid format string ({e}); write literal braces as {{{{ }}}}") from e
    for slot in slots:
        if slot not in TEMPLATE_SLOTS:
            raise ConfigError(key, f"unknown placeholder {{{slot}}}; allowed: {', '.join(TEMPLATE_SLOTS)}")
    if "question" not in slots:
        raise ConfigError(key, "must contain {question}")
    return slots


def _expand_local(path_value, root: Path, key: str) -> list[Path]:
    files: list[Path] = []
    for item in _as_list(path_value):
        p = resolve_path(item, root)
        if any(ch in str(item) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(p)))
            if not matches:
                raise ConfigError(key, f"the pattern {p} matches no file")
            files.extend(matches)
        elif not p.is_file():
            raise ConfigError(key, f"file {p} does not exist")
        else:
            files.append(p)
    return files


@dataclass(frozen=True)
class DataPlan:
    """The validated data config: sources, normalised mix weights, eval list and mix options."""

    sources: dict[str, SourceSpec]
    mix: dict[str, float]              # train source -> probability (sums to 1, zero weights dropped)
    eval: tuple[str, ...]
    train_size: int | None
    stopping_strategy: str
    balance: dict[str, str]
    warn_drop_fraction: float
    max_drop_fraction: float
    allow_leakage: bool
    cache: bool
    cache_dir: Path
    near_duplicate_threshold: float | None = 0.6  # data.leakage.near_duplicate_threshold (None: no check)
    max_bad_row_fraction: float = 0.01  # a source with more bad rows skipped fails


def validate_data_config(data_cfg) -> DataPlan:
    """Check the whole data config without reading any data file; returns the parsed plan.

    Raises ConfigError naming the key (unknown source in data.mix or data.eval, negative or all-zero weights,
    missing local files, bad field mapping, bad template, ...).
    """
    if data_cfg is None:
        raise ConfigError("data", "is missing")
    root = root_dir(data_cfg)
    sources_cfg = data_cfg.get("sources") or {}
    mix_cfg = _plain(data_cfg.get("mix")) or {}
    eval_names = _as_list(_plain(data_cfg.get("eval")))
    if not isinstance(mix_cfg, dict):
        raise ConfigError("data.mix", "must be a mapping {source: weight}")
    known = sorted(sources_cfg.keys())
    for name in list(mix_cfg) + eval_names:
        if name not in sources_cfg:
            where = "data.mix" if name in mix_cfg else "data.eval"
            raise ConfigError(f"{where}.{name}" if where == "data.mix" else where,
                              f"unknown source '{name}'; configured sources: {known} "
                              f"(add one with +data/sources@data.sources.{name}=<yaml stem>)")
    weights: dict[str, float] = {}
    for name, w in mix_cfg.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"data.mix.{name}", f"weight must be a finite number >= 0, got {w!r}")
        if w > 0:
            weights[name] = float(w)
    if mix_cfg and not weights:
        raise ConfigError("data.mix", "all weights are zero: nothing to train on")
    used = set(weights) | set(eval_names)
    sources = {name: parse_source(name, sources_cfg[name], root) for name in known if name in used}
    for name in weights:
        if sources[name].role != "train":
            raise ConfigError(f"data.mix.{name}", f"source '{name}' has role {sources[name].role}: an evaluation "
                              "set cannot be trained on")
    for name in eval_names:
        if sources[name].role != "eval":
            raise ConfigError("data.eval", f"source '{name}' has role {sources[name].role}, not eval")
    if len(set(eval_names)) != len(eval_names):
        raise ConfigError("data.eval", f"lists a source twice: {eval_names}")
    total = sum(weights.values())
    mix = {name: w / total for name, w in weights.items()}

    train_size = data_cfg.get("train_size")
    if train_size is not None and (not isinstance(train_size, int) or train_size <= 0):
        raise ConfigError("data.train_size", f"must be a positive integer or null, got {train_size!r}")
    stopping = data_cfg.get("stopping_strategy", "first_exhausted")
    if stopping not in STOPPING_STRATEGIES:
        raise ConfigError("data.stopping_strategy", f"{stopping!r} is not one of {', '.join(STOPPING_STRATEGIES)}")
    balance = _plain(data_cfg.get("balance")) or {}
    for name, mode in balance.items():
        if name not in mix_cfg:
            raise ConfigError(f"data.balance.{name}", f"'{name}' is not a source in data.mix")
        if mode not in BALANCE_MODES:
            raise ConfigError(f"data.balance.{name}", f"{mode!r} is not one of {', '.join(BALANCE_MODES)}")
        if sources.get(name) and sources[name].answer_type in ("numeric", "open") and mode != "none":
            raise ConfigError(f"data.balance.{name}", f"{sources[name].answer_type} answers have no labels to balance")
    length = _plain(data_cfg.get("length_filter")) or {}
    warn = length.get("warn_drop_fraction", 0.2)
    max_drop = length.get("max_drop_fraction", 0.5)
    for k, v in (("warn_drop_fraction", warn), ("max_drop_fraction", max_drop)):
        if not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ConfigError(f"data.length_filter.{k}", f"must be a fraction in [0, 1], got {v!r}")
    max_bad = data_cfg.get("max_bad_row_fraction", 0.01)
    if isinstance(max_bad, bool) or not isinstance(max_bad, (int, float)) or not 0 <= max_bad <= 1:
        raise ConfigError("data.max_bad_row_fraction", f"must be a fraction in [0, 1], got {max_bad!r}")
    cache_dir = resolve_path(data_cfg.get("cache_dir") or ".cache/data", root)
    leakage = _plain(data_cfg.get("leakage")) or {}
    near = leakage.get("near_duplicate_threshold", 0.6)
    if near is not None and (isinstance(near, bool) or not isinstance(near, (int, float)) or not 0 < near <= 1):
        raise ConfigError("data.leakage.near_duplicate_threshold",
                          f"must be a Jaccard similarity in (0, 1] or null (no check), got {near!r}")
    return DataPlan(
        sources=sources, mix=mix, eval=tuple(eval_names), train_size=train_size, stopping_strategy=stopping,
        balance={k: v for k, v in balance.items() if v != "none"}, warn_drop_fraction=float(warn),
        max_drop_fraction=float(max_drop), allow_leakage=bool(data_cfg.get("allow_leakage", False)),
        cache=bool(data_cfg.get("cache", True)), cache_dir=cache_dir,
        near_duplicate_threshold=None if near is None else float(near), max_bad_row_fraction=float(max_bad),
    )

