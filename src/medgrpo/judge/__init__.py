"""An LLM judge (any OpenAI-compatible chat endpoint) that scores open-ended answers against a YAML rubric.

settings.py: the `judge` config group; verdict.py: request messages and verdict validation; cache.py: SQLite
verdict cache; client.py: batch scoring with bounded concurrency, retries, stats and the failure policy.
"""
from medgrpo.judge.cache import VerdictCache, cache_key
from medgrpo.judge.client import Judge, JudgeFailed, JudgeStats
from medgrpo.judge.settings import JudgeSettings, Rubric

__all__ = ["Judge", "JudgeFailed", "JudgeSettings", "JudgeStats", "Rubric", "VerdictCache", "cache_key"]
