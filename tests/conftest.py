"""Shared fixtures: the tiny model (built once per session into a temp cache) and Hydra configs via the compose API."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache of built tiny models for the whole test session (MEDGRPO_CACHE reuses a persistent one)."""
    return Path(os.environ.get("MEDGRPO_CACHE") or tmp_path_factory.mktemp("cache")) / "models"


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache) -> Path:
    from medgrpo.tiny import ensure_tiny_model

    return ensure_tiny_model(model_cache)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from medgrpo.backends.hf import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


# Tests on the full public datasets skip when ../shared/data is not beside the repository. A clean clone
# elsewhere would silently run fewer tests, so the summary names them, and MEDGRPO_REQUIRE_DATA=1 (for machines
# that must have the data) turns those skips into failures.
DATA_SKIP_MARKER = "shared/data"


def _skip_reason(report) -> str:
    return str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and DATA_SKIP_MARKER in _skip_reason(report) and os.environ.get("MEDGRPO_REQUIRE_DATA") == "1":
        report.outcome = "failed"
        report.longrepr = f"MEDGRPO_REQUIRE_DATA=1 but the data is missing: {_skip_reason(report)}"


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if DATA_SKIP_MARKER in _skip_reason(r)]
    if skipped:
        terminalreporter.section("tests skipped for missing data", sep="!", red=True, bold=True)
        terminalreporter.line(f"{len(skipped)} tests on the real public datasets did not run: put the shared data "
                              f"folder at {ROOT.parent / 'shared' / 'data'} (MEDGRPO_REQUIRE_DATA=1 fails instead)",
                              red=True)
        for report in skipped:
            terminalreporter.line(f"  {report.nodeid}: {_skip_reason(report)}")
