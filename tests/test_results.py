"""results.json is atomic, JSON-valid (no NaN) and never carries credentials, but keeps every hyperparameter."""
import json
import os

import pytest
from omegaconf import OmegaConf

from medgrpo.config import compose_config
from medgrpo.results import REDACTED, redact_secrets, write_json_atomic, write_jsonl_atomic


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
    config = {"logger": {"api_key": "abc123", "project": "medgrpo"}, "hub": [{"HF_TOKEN": "hf_0123456789abcdef"}],
              "grpo": {"max_completion_length": 1024}, "empty_token": None}
    redacted = redact_secrets(config)
    assert redacted["logger"] == {"api_key": REDACTED, "project": "medgrpo"}
    assert redacted["hub"] == [{"HF_TOKEN": REDACTED}]
    assert redacted["grpo"] == {"max_completion_length": 1024}
    assert redacted["empty_token"] is None


def numeric_leaves(tree, path=()):
    """{dotted path: value} for every number and boolean in a nested dict/list."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    leaves = {}
    for key, value in items:
        if isinstance(value, (dict, list)):
            leaves.update(numeric_leaves(value, (*path, str(key))))
        elif isinstance(value, (int, float)):  # bool is an int
            leaves[".".join((*path, str(key)))] = value
    return leaves


@pytest.mark.parametrize("overrides", [(), ("preset=tiny",), ("budget=cap",), ("preset=tiny", "budget=extend")])
def test_every_numeric_hyperparameter_survives_redaction(overrides, tmp_path):
    config = OmegaConf.to_container(compose_config(*overrides, output_dir=tmp_path), resolve=True)
    numbers = numeric_leaves(config)
    assert numeric_leaves(redact_secrets(config)) == numbers
    assert {"grpo.max_completion_length", "eval.max_new_tokens", "lora.rank", "seed"} <= set(numbers)
    if any(o.startswith("budget=") for o in overrides):
        assert {"budget.max_thinking_tokens", "budget.max_answer_tokens"} <= set(numbers)
    assert REDACTED not in json.dumps(redact_secrets(config))  # the shipped configs hold no secret at all


def test_planted_secrets_are_redacted_and_look_alikes_are_not():
    planted = {
        "logger": {"api_key": "0123456789abcdef0123456789abcdef01234567", "project": "medgrpo"},
        "judge": {"openai_api_key": "sk-proj-planted", "password": "hunter2", "client_secret": "cl13nt-s3cr3t"},
        "teacher": {"api_key_env": "DEEPSEEK_API_KEY"},  # the variable's name, not the key
        "hub": {"hf_token": "hf_plantedTOKENvalue123", "token": "ghp_plantedToken0123"},
        "hydra_sweeper": {"storage": "postgresql://medgrpo:pl4nted-pw@db.example:5432/optuna"},
        "notes": ["see mysql://root:rootpw@127.0.0.1/db"],
        "budget": {"max_thinking_tokens": 512, "max_answer_tokens": 64, "num_ignore": 1},
        "eval": {"max_new_tokens": 1024, "num_tokens_logged": True},
        "model": {"pad_token": "<|endoftext|>", "tokenizer": "Qwen/Qwen2.5-3B-Instruct", "token_budget": 8},
        "optuna": {"storage": "sqlite:////tmp/sweep/optuna.db"},
    }
    redacted = redact_secrets(planted)
    assert redacted["logger"] == {"api_key": REDACTED, "project": "medgrpo"}
    assert redacted["judge"] == {"openai_api_key": REDACTED, "password": REDACTED, "client_secret": REDACTED}
    assert redacted["hub"] == {"hf_token": REDACTED, "token": REDACTED}
    assert redacted["hydra_sweeper"]["storage"] == "postgresql://medgrpo:***@db.example:5432/optuna"
    assert redacted["notes"] == ["see mysql://root:***@127.0.0.1/db"]
    for kept in ("teacher", "budget", "eval", "model", "optuna"):
        assert redacted[kept] == planted[kept]
    text = json.dumps(redacted)
    for secret in ("0123456789abcdef", "sk-proj", "hunter2", "cl13nt", "hf_planted", "ghp_", "pl4nted", "rootpw"):
        assert secret not in text


def test_a_list_under_a_secret_key_is_redacted_item_by_item():
    config = {"judge": {"api_keys": ["sk-live-aaaa1111", "sk-live-bbbb2222"]},
              "hub": {"hf_token": ["hf_plantedTOKEN01", "<|endoftext|>"]},
              "keys": {"password": [["hunter2", "hunter3"]]},
              "storages": ["postgresql://u:p@ss@db/optuna", "sqlite:///x.db"]}
    assert redact_secrets(config) == {
        "judge": {"api_keys": [REDACTED, REDACTED]},
        "hub": {"hf_token": [REDACTED, "<|endoftext|>"]},  # a pad token is no credential
        "keys": {"password": [[REDACTED, REDACTED]]},
        "storages": ["postgresql://u:***@db/optuna", "sqlite:///x.db"]}


def test_json_safe_reaches_lists_tuples_and_keys(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"curve": [1.0, float("nan"), (float("-inf"), 2)], 3: {"x": float("inf")},
                             ("pubmedqa", "gsm8k"): 0.5})  # a tuple key, which json cannot write
    assert json.loads(path.read_text()) == {"curve": [1.0, None, [None, 2]], "3": {"x": None},
                                            "('pubmedqa', 'gsm8k')": 0.5}
