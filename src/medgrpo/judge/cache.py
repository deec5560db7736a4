"""Judge verdicts in SQLite, shared by all jobs: a re-run of the same completions costs no API call.

The key is a hash of judge model + rubric version + question + reference answer + completion, so a new model
or a new rubric version never reads an old verdict. Verdicts (not scores) are stored: changing only the rubric
weights re-scores cached verdicts for free. WAL mode lets parallel jobs of a sweep read while one writes.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 500  # keys per SELECT ... IN (...): below SQLite's default limit of 999 parameters


def cache_key(model: str, rubric_version: str, question: str, reference: str | None, completion: str) -> str:
    parts = (model, rubric_version, question, reference or "", completion)
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


class VerdictCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection used from the trainer's thread and TRL's async-reward thread: serialise it with a lock.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # No fsync per commit: a crash may lose the last verdicts (they are re-asked), never corrupt the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS verdicts "
                             "(key TEXT PRIMARY KEY, verdict TEXT NOT NULL, created REAL NOT NULL)")
            self._db.commit()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                query = f"SELECT key, verdict FROM verdicts WHERE key IN ({','.join('?' * len(chunk))})"
                found.update((key, json.loads(verdict)) for key, verdict in self._db.execute(query, chunk))
        return found

    def put_many(self, verdicts: dict[str, dict]) -> None:
        now = time.time()
        rows = [(key, json.dumps(verdict, ensure_ascii=False), now) for key, verdict in verdicts.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
