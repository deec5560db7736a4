"""results.json is atomic, JSON-valid (no NaN) and never carries credentials."""
import json
import os

import pytest

from medgrpo.results import redact_secrets, write_json_atomic, write_jsonl_atomic


def test_write_json_atomic_replaces_nan_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "job" / "results.json"
    write_json_atomic(path, {"status": "ok", "metrics": {"a": float("nan"), "b": 1.5, "c": float("inf")}})
    assert json.loads(path.read_text()) == {"status": "ok", "metrics": {"a": None, "b": 1.5, "c": None}}
    assert os.listdir(path.parent) == ["results.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "ok"})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"status": object()})
    assert json.loads(path.read_text()) == {"status": "ok"}
    assert os.listdir(tmp_path) == ["results.json"]


def test_jsonl_one_object_per_line(tmp_path):
    path = tmp_path / "predictions" / "pubmedqa.jsonl"
    write_jsonl_atomic(path, [{"id": "1", "completion": "ünïcode"}, {"id": "2", "completion": "b"}])
    assert [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()] == ["1", "2"]


def test_redact_secrets_at_any_depth():
    config = {"logger": {"api_key": "abc123", "project": "medgrpo"}, "hub": [{"HF_TOKEN": "hf_x"}],
              "grpo": {"max_completion_length": 1024}, "empty_token": None}
    redacted = redact_secrets(config)
    assert redacted["logger"] == {"api_key": "<redacted>", "project": "medgrpo"}
    assert redacted["hub"] == [{"HF_TOKEN": "<redacted>"}]
    assert redacted["grpo"] == {"max_completion_length": 1024}
    assert redacted["empty_token"] is None
