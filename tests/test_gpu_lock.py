"""requirements/gpu.lock (what `make install-gpu` and environment.yml install) agrees with pyproject.toml's pins."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "gpu.lock"
# The lock's target: what the markers of pyproject's requirements are evaluated against.
TARGET = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def parse_lock(text: str) -> dict[str, Version]:
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;#]+)", line.strip())
        assert match, f"not a plain pin in the lock: {line!r}"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def locked_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [Requirement(r) for r in project["dependencies"] + extras["gpu"] + extras["dev"]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({**TARGET, "extra": ""})]


def unmet(pins: dict[str, Version], requirements: list[Requirement]) -> list[str]:
    problems = []
    for requirement in requirements:
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name}: missing from the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}: locked {version}, pyproject wants {requirement.specifier}")
    return problems


@pytest.fixture(scope="module")
def pins() -> dict[str, Version]:
    return parse_lock(LOCK.read_text())


def test_every_pyproject_requirement_is_locked_at_a_version_it_allows(pins):
    assert unmet(pins, locked_requirements()) == []


def test_the_check_catches_drift():
    # The same check on a lock where someone bumped trl past pyproject's pin, and forgot vllm.
    drifted = parse_lock("trl==1.15.0\ntorch==2.13.0\n")
    problems = unmet(drifted, [Requirement("trl==1.14.0"), Requirement("torch>=2.13,<2.14"), Requirement("vllm==0.31.0")])
    assert problems == ["trl: locked 1.15.0, pyproject wants ==1.14.0", "vllm: missing from the lock"]


def test_the_gpu_stack_pins(pins):
    assert pins["torch"] == Version("2.13.0")
    assert pins["vllm"] == Version("0.31.0") and pins["unsloth"] == Version("2026.10.9")
    assert pins["unsloth-zoo"] == Version("2026.10.9")


def test_certifi_meets_unsloths_floor_and_the_override_is_written_down(pins):
    # unsloth 2026.10.9 and unsloth-zoo 2026.10.9 declare certifi>=2026.10.19 (their wheels' METADATA).
    assert Requirement("certifi>=2026.10.19").specifier.contains(pins["certifi"])
    header = LOCK.read_text().split("\n# ---- end of header\n")[0]
    assert "certifi>=2026.10.19" in header and "--override" in header


def test_hydra_optuna_sweeper_is_left_to_a_no_deps_install(pins):
    # Its optuna<3 pin would drag optuna (and SQLAlchemy 1) back; make install-gpu adds it with --no-deps.
    assert "hydra-optuna-sweeper" not in pins and pins["optuna"] >= Version("4.9")
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --no-deps -r requirements/gpu.lock" in makefile
    assert "pip install --no-deps hydra-optuna-sweeper==1.3.0" in makefile


def test_environment_yml_installs_the_lock():
    environment = (ROOT / "environment.yml").read_text()
    assert "- -r requirements/gpu.lock" in environment and "python=3.11" in environment
    assert "make install-gpu" in environment  # the sweeper and the CUDA check
