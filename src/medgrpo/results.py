"""results.json and other job files, written atomically: a reader never sees half a file, a crash leaves none."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from medgrpo.secrets import is_secret, redact_url_passwords

REDACTED = "<redacted>"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; None is unambiguous for table readers
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def redact_secrets(value: Any, key: Any = None) -> Any:
    """A copy with credentials replaced, at any depth (rule: medgrpo.secrets.is_secret) and URL passwords masked.
    Numbers and booleans are never touched: budget.max_thinking_tokens is a hyperparameter, not a token."""
    if isinstance(value, dict):
        return {k: redact_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v, key) for v in value]
    if is_secret(key, value):
        return REDACTED
    return redact_url_passwords(value) if isinstance(value, str) else value


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    _write_atomic(Path(path), lambda f: json.dump(_json_safe(data), f, indent=2, sort_keys=False))


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    def write(file):
        for row in rows:
            file.write(json.dumps(_json_safe(row), ensure_ascii=False) + "\n")

    _write_atomic(Path(path), write)


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A temp folder beside `target`, renamed to `target` when the block ends without error (removed otherwise):
    a reader sees the whole folder or none. Hold a lock around it when several processes may build `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        yield staging
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
