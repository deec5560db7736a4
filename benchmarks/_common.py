"""What every benchmark records beside its numbers: the machine, the library versions, and where the JSON goes."""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

from medgrpo.results import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"
# Exit status of a benchmark that could not measure on this machine (no GPU): run_all reports it as skipped.
SKIPPED = 3
PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "tokenizers", "unsloth", "vllm", "bitsandbytes")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    info = {"cpu_count": os.cpu_count(), "cores_available": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {p: v for p in PACKAGES if (v := _version(p))}}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_result(name: str, result: dict, out: Path | None = None) -> Path:
    """Write benchmarks/results/<name>.json (with machine info) atomically and print it."""
    path = out or RESULTS / f"{name}.json"
    payload = {"benchmark": name, **result, "machine": machine()}
    write_json_atomic(path, payload)
    print(json.dumps(payload, indent=2))
    return path
