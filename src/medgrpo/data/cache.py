"""A disk cache of prepared datasets, keyed on everything that determines them.

    key = cache_key(kind, payload, files, tokenizer)       # payload: JSON-able config parts
    hit = load_cached(cache_dir, key)                      # (dataset or DatasetDict, report) or None
    store(cache_dir, key, data, report)

The key covers the source configs, the content of every local file (xxhash), the tokenizer (vocabulary, merges
and chat template), the prompt format, seeds and sizes, and the data code itself (a digest of medgrpo/data/*.py:
editing it invalidates the cache, no version to bump). Hub sources are keyed by path/name/split/revision: pin
`revision` for a cache that cannot go stale. Entries are written to a temp dir and renamed, so a reader never
sees a half-written one, and built under a file lock (`building`), so two jobs preparing the same data at once
build it once: the second waits and reads the first one's entry.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import xxhash
from filelock import FileLock
from datasets import Dataset, DatasetDict, load_from_disk
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

log = logging.getLogger(__name__)


@functools.cache
def code_version() -> str:
    """A digest of the data preparation code (every medgrpo/data/*.py)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = xxhash.xxh3_128()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    h.update(vocabulary.encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    return h.hexdigest()


def cache_key(kind: str, payload: dict, files: list[Path], tokenizer) -> str:
    h = hashlib.sha256(f"{kind}:{code_version()}".encode())
    h.update(json.dumps(payload, sort_keys=True, default=str).encode())
    for path in sorted(set(files)):
        h.update(f"{path}:{file_digest(path)}".encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    return f"{kind}-{h.hexdigest()[:20]}"


def load_cached(cache_dir: Path, key: str):
    entry = cache_dir / key
    if not (entry / "report.json").is_file():
        return None
    try:
        data = load_from_disk(str(entry / "data"))
        report = json.loads((entry / "report.json").read_text())
    except (OSError, ValueError) as e:  # a damaged entry is rebuilt, not fatal
        log.warning("ignoring unreadable data cache entry %s: %s", entry, e)
        return None
    return data, report


def building(cache_dir: Path, key: str) -> FileLock:
    """The lock held while an entry is looked up and, on a miss, built and stored."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return FileLock(Path(cache_dir) / f".{key}.lock")


def store(cache_dir: Path, key: str, data: Dataset | DatasetDict, report: dict) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    quiet = not are_progress_bars_disabled()
    if quiet:  # one "Saving the dataset" bar per eval set only clutters the job log
        disable_progress_bars()
    try:
        data.save_to_disk(str(staging / "data"))
        (staging / "report.json").write_text(json.dumps(report, indent=1, default=str))
        os.replace(staging, cache_dir / key)
    except OSError:
        if not (cache_dir / key / "report.json").is_file():  # lost a race: the other job wrote the same entry
            raise
    finally:
        if quiet:
            enable_progress_bars()
        shutil.rmtree(staging, ignore_errors=True)
