"""The `judge` config group, checked once before any model loads: endpoint, rubric, limits, failure policy.

    settings = JudgeSettings.from_config(cfg.judge)   # ConfigError naming judge.<key> on a bad value
    api_key = settings.api_key()                      # ConfigError naming the env variable when it is unset

The API key is read from the environment variable named by judge.api_key_env and is never stored in a config,
a log line or a file: only the variable's name travels with the config.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medgrpo.errors import ConfigError

SCORE_MAX = 10  # every rubric criterion is an integer 0..SCORE_MAX


@dataclass(frozen=True)
class Rubric:
    version: str                      # part of the cache key: bump it whenever the instructions change
    weights: dict[str, float]         # criterion -> weight (normalised when scoring)
    descriptions: dict[str, str]      # criterion -> what the judge should look for
    instructions: str                 # the judge's system prompt

    def score(self, verdict: dict[str, int]) -> float:
        """The weighted mean of the criteria, scaled to [0, 1]."""
        total = sum(self.weights.values())
        mean = sum(weight * verdict[name] for name, weight in self.weights.items()) / total
        return min(1.0, mean / SCORE_MAX)  # min: float rounding must not push a perfect verdict past 1


@dataclass(frozen=True)
class FailurePolicy:
    max_failure_rate: float  # the job fails once more than this share of judged items got no verdict ...
    min_items: int           # ... counted over at least this many items (one bad call early does not end a run)


@dataclass(frozen=True)
class JudgeSettings:
    base_url: str
    model: str
    api_key_env: str
    rubric: Rubric
    temperature: float
    max_output_tokens: int
    concurrency: int
    timeout_s: float
    keepalive_s: float        # idle connections stay open this long: a GRPO step is longer than the SDK's 5 s
    retries: int              # the openai client's retries (429, 5xx, timeouts, connection errors), with backoff
    reask_invalid: int        # new requests after a malformed or out-of-range verdict
    cache_path: Path
    failure_policy: FailurePolicy

    @classmethod
    def from_config(cls, judge_cfg) -> "JudgeSettings":
        raw = OmegaConf.to_container(judge_cfg, resolve=True) if isinstance(judge_cfg, DictConfig) else judge_cfg
        if not isinstance(raw, dict):
            raise ConfigError("judge", "is missing: add `judge: deepseek` to the defaults or pass judge=<option>")

        def text(key: str) -> str:
            value = raw.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"judge.{key}", f"expected a non-empty string, got {value!r}")
            return value

        def number(key: str, low: float, high: float = math.inf, integer: bool = False, source=raw, prefix="judge"):
            value = source.get(key)
            kind = int if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
                raise ConfigError(f"{prefix}.{key}", f"expected {'an integer' if integer else 'a number'} in "
                                                     f"[{low}, {high}], got {value!r}")
            return value

        base_url = text("base_url")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("judge.base_url", f"expected an http(s) URL ending in /v1, got {base_url!r}")
        policy = raw.get("failure_policy") or {}
        return cls(
            base_url=base_url, model=text("model"), api_key_env=text("api_key_env"),
            rubric=_rubric(raw.get("rubric")), temperature=float(number("temperature", 0, 2)),
            max_output_tokens=number("max_output_tokens", 16, 8192, integer=True),
            concurrency=number("concurrency", 1, 1024, integer=True), timeout_s=float(number("timeout_s", 0.01)),
            keepalive_s=float(number("keepalive_s", 0)),
            retries=number("retries", 0, 20, integer=True), reask_invalid=number("reask_invalid", 0, 5, integer=True),
            cache_path=Path(text("cache_path")).expanduser(),
            failure_policy=FailurePolicy(
                max_failure_rate=float(number("max_failure_rate", 0, 1, source=policy, prefix="judge.failure_policy")),
                min_items=number("min_items", 1, integer=True, source=policy, prefix="judge.failure_policy")),
        )

    def api_key(self) -> str:
        """The key from the environment; refusing the job (before any model loads) when it is not set."""
        value = os.environ.get(self.api_key_env, "").strip()
        if not value:
            raise ConfigError("judge.api_key_env", f"environment variable {self.api_key_env} is not set: export "
                                                   f"{self.api_key_env}=<your key> for the judge at {self.base_url}")
        return value


def _rubric(raw) -> Rubric:
    if not isinstance(raw, dict):
        raise ConfigError("judge.rubric", "expected a mapping with version, instructions and criteria")
    version, instructions, criteria = raw.get("version"), raw.get("instructions"), raw.get("criteria")
    if not isinstance(version, str) or not version:
        raise ConfigError("judge.rubric.version", f"expected a non-empty string, got {version!r}")
    if not isinstance(instructions, str) or not instructions.strip():
        raise ConfigError("judge.rubric.instructions", "expected the judge's instructions (a non-empty string)")
    if not isinstance(criteria, dict) or not criteria:
        raise ConfigError("judge.rubric.criteria", "expected a mapping criterion -> {weight, description}")
    weights, descriptions = {}, {}
    for name, spec in criteria.items():
        key = f"judge.rubric.criteria.{name}"
        if not str(name).isidentifier() or name == "rationale":
            raise ConfigError(key, "a criterion name must be an identifier other than 'rationale' (a JSON field)")
        weight = (spec or {}).get("weight") if isinstance(spec, dict) else None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"{key}.weight", f"expected a number >= 0, got {weight!r}")
        weights[name], descriptions[name] = float(weight), str(spec.get("description") or "")
    if sum(weights.values()) <= 0:
        raise ConfigError("judge.rubric.criteria", "all weights are 0: the score would be undefined")
    return Rubric(version=version, weights=weights, descriptions=descriptions, instructions=instructions.strip())
