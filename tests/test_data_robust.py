"""Data robustness: skipped rows counted, warned about and capped (data.max_bad_row_fraction); empty files called
empty; a cache key that follows the data code; one build when two jobs prepare the same mix; balance={} is off."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from _run import ROOT
from medgrpo.config import canonical_overrides, compose_config
from medgrpo.data import cache
from medgrpo.data.prepare import prepare_train
from medgrpo.data.spec import validate_data_config
from medgrpo.errors import DataError
from medgrpo.prompting import PromptFormat

GOOD = {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3+4=7\n#### 7"}
BAD = {"question": "How many?", "answer": "no final answer line"}  # GSM8K answers end with '#### <number>'


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def train_config(tmp_path: Path, train_file: Path, *overrides: str):
    return compose_config("preset=tiny", f"data.sources.gsm8k_train.local.path={train_file}",
                          "data.sources.gsm8k_train.bad_rows=skip", "data.mix.pubmedqa_labeled_pool=0",
                          f"paths.cache_dir={tmp_path / 'cache'}", *overrides, output_dir=tmp_path / "job")


def prepare(cfg, tokenizer):
    return prepare_train(cfg.data, tokenizer, PromptFormat.from_config(cfg.prompt), cfg.seed, 992)


def test_a_source_with_too_many_bad_rows_fails_naming_the_file(tmp_path, tiny_tokenizer):
    rows = tmp_path / "train.jsonl"
    write_jsonl(rows, [GOOD] * 4 + [BAD] * 6)  # the case: 6 of 10 rows dropped without a word
    with pytest.raises(DataError) as failed:
        prepare(train_config(tmp_path, rows), tiny_tokenizer)
    message = str(failed.value)
    assert "6 of 10 rows are bad" in message and str(rows) in message
    assert "data.max_bad_row_fraction=0.01" in message


def test_skipped_rows_are_counted_warned_about_and_reported(tmp_path, tiny_tokenizer, caplog):
    rows = write_jsonl(tmp_path / "train.jsonl", [GOOD] * 8 + [BAD] * 2)
    with caplog.at_level(logging.WARNING):
        _, report = prepare(train_config(tmp_path, rows, "data.max_bad_row_fraction=0.5"), tiny_tokenizer)
    entry = report["sources"]["gsm8k_train"]
    assert entry["bad_rows"] == 2 and entry["bad_row_fraction"] == 0.2
    assert entry["bad_rows_by_file"] == {f"file {rows}": 2}
    assert "skipped 2 of 10 rows as bad" in caplog.text and "gsm8k_train" in caplog.text


def test_an_empty_file_is_called_empty(tmp_path, tiny_tokenizer):
    empty = tmp_path / "train.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"source 'gsm8k_train': file .*train.jsonl is empty"):
        prepare(train_config(tmp_path, empty), tiny_tokenizer)


def test_the_cache_key_follows_the_data_code(monkeypatch, tiny_tokenizer):
    digest = cache.code_version()
    assert len(digest) == 16 and digest == cache.code_version()
    key = cache.cache_key("train", {"a": 1}, [], tiny_tokenizer)
    monkeypatch.setattr(cache, "code_version", lambda: "edited-data-code")  # as if a data/*.py file changed
    assert cache.cache_key("train", {"a": 1}, [], tiny_tokenizer) != key


def test_an_empty_balance_turns_balancing_off(tmp_path):
    assert validate_data_config(compose_config(output_dir=tmp_path).data).balance  # the default balances
    for override in ("data.balance={}", "data.balance=null"):
        cfg = compose_config(*canonical_overrides([override]), output_dir=tmp_path)
        assert validate_data_config(cfg.data).balance == {}, override


PREPARE = """
import json, sys
from medgrpo.backends.hf import load_tokenizer
from medgrpo.config import compose_config
from medgrpo.data.prepare import prepare_train
from medgrpo.prompting import PromptFormat
from medgrpo.tiny import ensure_tiny_model
cfg = compose_config("preset=tiny", f"paths.cache_dir={sys.argv[1]}", output_dir=sys.argv[1])
tokenizer = load_tokenizer(str(ensure_tiny_model(sys.argv[2])))
print(json.dumps(prepare_train(cfg.data, tokenizer, PromptFormat.from_config(cfg.prompt), 0, 992)[1]["cache"]))
"""


@pytest.mark.slow
def test_two_jobs_preparing_the_same_mix_build_it_once(tmp_path, tiny_model_dir):
    jobs = [subprocess.Popen([sys.executable, "-c", PREPARE, str(tmp_path), str(tiny_model_dir.parent)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = []
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(outcomes) == ["hit", "miss"]  # one built it, the other waited and read it
    entries = [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith("train-")]
    assert len(entries) == 1, entries
