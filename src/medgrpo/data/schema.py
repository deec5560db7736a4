"""The schema of a source YAML (conf/data/sources/*.yaml), registered with Hydra's ConfigStore.

Each source file starts with `defaults: [source_schema, _self_]`, so Hydra composes it onto these dataclasses:
a misspelt key (`fields.qestion`, `local.encodng`) or a wrong type fails when the config is composed, before
anything runs. Values are then checked, and turned into a SourceSpec, by spec.parse_source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class FieldsSchema:
    """Which column (or dotted path into a nested column) holds each role; null when the source lacks it."""

    id: Optional[str] = None
    question: Optional[str] = None
    answer: Optional[str] = None
    context: Optional[str] = None
    choices: Any = None          # one column holding a list, or a list of columns (one option each)
    # Item metadata, carried to rewards and evaluation in the `meta` column (open answers: language picks the
    # keyword lists, risk_level and expected_behavior what the safety metrics expect).
    language: Optional[str] = None
    risk_level: Optional[str] = None
    specialty: Optional[str] = None
    expected_behavior: Optional[str] = None
    # SFT (stage=sft|sft_grpo): the column holding the worked reasoning written before the answer (see `target`).
    target: Optional[str] = None


@dataclass
class TargetSchema:
    """How an SFT target is written from a row (medgrpo/sft.py)."""

    format: str = "tagged"        # tagged: reasoning + answer in the prompt group's tags | plain: the answer alone
    until: Optional[str] = None   # cut the reasoning at this text (GSM8K: "####" starts the final answer)
    remove: Optional[str] = None  # a regex removed from the reasoning (GSM8K's <<48/2=24>> calculator notes)


@dataclass
class HubSchema:
    path: Optional[str] = None
    name: Any = None             # a config name, or a list of them (concatenated)
    split: Any = None            # a split name, or a list of them
    revision: Optional[str] = None


@dataclass
class LocalSchema:
    path: Any = None             # a file, a glob, or a list of them; null: read from the hub
    format: Optional[str] = None
    encoding: Optional[str] = None
    csv_header: bool = True
    csv_columns: Optional[list[str]] = None
    # Roles this file layout names differently from the hub's (null: the file has no such column); the roles are
    # checked by spec.parse_source, since here an explicit null must stay distinct from "not set".
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class IdsSchema:
    namespace: Optional[str] = None
    include: Optional[str] = None
    exclude: Optional[str] = None


@dataclass
class FiltersSchema:
    max_context_chars: Optional[int] = None


@dataclass
class SourceSchema:
    role: str = MISSING
    answer_type: str = MISSING
    template: str = MISSING
    hub: HubSchema = field(default_factory=HubSchema)
    local: LocalSchema = field(default_factory=LocalSchema)
    fields: FieldsSchema = field(default_factory=FieldsSchema)
    ids: IdsSchema = field(default_factory=IdsSchema)
    filters: FiltersSchema = field(default_factory=FiltersSchema)
    target: TargetSchema = field(default_factory=TargetSchema)
    options_in_question: bool = False
    answer_index_base: int = 0
    max_items: Optional[int] = None
    bad_rows: str = "error"


def register_source_schema() -> None:
    ConfigStore.instance().store(group="data/sources", name="source_schema", node=SourceSchema)
