"""Secrets come from the environment: a literal one on the command line is refused before Hydra writes anything,
and a job run with secrets in its environment writes none of them to any file, log or message."""
from __future__ import annotations

import subprocess
import sys

import pytest

from medgrpo.secrets import is_secret, redact_url_passwords, secret_overrides_message
from tests._run import ROOT, read_results, run_entrypoint

WANDB_KEY = "0123456789abcdef" * 2 + "deadbeef"
HF_TOKEN = "hf_PlantedTokenValue0123456789"
DB_PASSWORD = "Pl4nted-DB-pw"
DB_URL = f"postgresql+psycopg2://medgrpo:{DB_PASSWORD}@127.0.0.1:1/optuna"  # port 1: nothing listens


PREFIX = "gets a secret on the command line, which Hydra would write into .hydra/, the job folder's name and " \
         "results.json; export"


@pytest.mark.parametrize("argv, key, env", [
    (["+logger.api_key=abc123"], "logger.api_key", "WANDB_API_KEY"),
    (["-m", "preset=tiny", "+judge.api_key='sk-live'"], "judge.api_key", "MEDGRPO_JUDGE_API_KEY"),
    (["+hub.hf_token=hf_0123456789abcdef"], "hub.hf_token", "MEDGRPO_HUB_HF_TOKEN"),
    (["--cfg", "job", "+db.password=hunter22"], "db.password", "MEDGRPO_DB_PASSWORD"),
    (["-m", "+oauth.client_secret=a,b"], "oauth.client_secret", "MEDGRPO_OAUTH_CLIENT_SECRET"),
    (["+notes=postgresql://u:pw@db/x"], "notes", "MEDGRPO_NOTES"),
    # Hydra resolves a job key's ${oc.env:...} into the folder name, the recorded overrides and the W&B name
    (["+logger.api_key=${oc.env:WANDB_API_KEY}"], "logger.api_key", "WANDB_API_KEY"),
    (["+extra=${oc.env:HF_TOKEN}"], "extra", "HF_TOKEN"),
])
def test_a_secret_for_a_job_key_on_the_command_line_is_refused_naming_the_variable(argv, key, env):
    assert secret_overrides_message(argv) == \
        f"error: '{key}' {PREFIX} {env}=... and read it in a config file as ${{oc.env:{env}}}"


def test_a_literal_storage_password_is_refused_and_the_environment_suggested():
    assert secret_overrides_message(["-m", f"hydra.sweeper.storage={DB_URL}"]) == \
        (f"error: 'hydra.sweeper.storage' {PREFIX} MEDGRPO_OPTUNA_STORAGE=... and pass "
         "hydra.sweeper.storage='${oc.env:MEDGRPO_OPTUNA_STORAGE}'")


@pytest.mark.parametrize("argv", [
    ["-m", "preset=tiny", "budget=cap", "budget.max_thinking_tokens=16,32", "budget.max_answer_tokens=8"],
    ["eval.max_new_tokens=64", "+model.pad_token=<|endoftext|>", "judge.api_key_env=MY_JUDGE_KEY"],
    ["hydra.sweeper.storage='${oc.env:MEDGRPO_OPTUNA_STORAGE}'", "paths.cache_dir=${oc.env:HOME}/cache"],
    ["hydra.sweeper.storage=sqlite:///multirun/optuna.db", "--help"],
])
def test_hyperparameters_and_environment_references_pass(argv):
    assert secret_overrides_message(argv) is None


def test_is_secret_never_takes_numbers_or_names():
    assert not any(is_secret(key, 512) for key in ("max_thinking_tokens", "api_key", "token", "password"))
    assert not is_secret("api_key_env", "DEEPSEEK_API_KEY") and not is_secret("pad_token", "<|endoftext|>")
    assert is_secret("token", "ghp_0123456789") and is_secret("WANDB_API_KEY", "x")
    assert redact_url_passwords("a postgresql://u:p@h/db and redis://:pw@h:6379/0, http://h:80/x") == \
        "a postgresql://u:***@h/db and redis://:***@h:6379/0, http://h:80/x"


def test_a_url_password_with_an_at_sign_is_masked_whole():
    assert redact_url_passwords("postgresql://medgrpo:p@ss:w@rd@db:5432/optuna") == \
        "postgresql://medgrpo:***@db:5432/optuna"
    # the password ends at the last '@' before a space: an address later in the text is not part of it
    assert redact_url_passwords("storage postgresql://u:p@ss@h/db; mail admin@example.org") == \
        "storage postgresql://u:***@h/db; mail admin@example.org"
    for clean in ("https://user@host/x", "http://h:80/x", "sqlite:////tmp/optuna.db", "mail admin@example.org"):
        assert redact_url_passwords(clean) == clean


def test_which_names_and_values_are_secrets():
    for name in ("api_key", "apikey", "OPENAI_API_KEY", "api-key", "db.password", "passwd", "client_secret",
                 "token", "hf_token", "access_token", "token_secret"):
        assert is_secret(name, "abcd1234"), name
    for name in ("max_new_tokens", "tokenizer", "num_tokens", "api_key_env", "judge.api_key_env", "project"):
        assert not is_secret(name, "abcd1234"), name
    # a token word needs a value that looks like a credential: 8 or more of letters, digits and -_.=+/:
    assert is_secret("token", "abcd1234") and not is_secret("token", "abcd123")
    assert not is_secret("pad_token", "<|pad|>") and not is_secret("token", "")
    assert is_secret("password", "pw") and is_secret("api_key", "<|any text|>")  # these names always hold one


def test_the_entrypoint_refuses_before_writing_anything(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), "preset=tiny", f"+logger.api_key={WANDB_KEY}",
                             f"hydra.run.dir={tmp_path / 'job'}"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [secret_overrides_message([f"+logger.api_key={WANDB_KEY}"])]
    assert WANDB_KEY not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # no job dir, no outputs/, no .hydra/


def grep_every_file(folder, secrets):
    leaks = []
    for path in folder.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            leaks += [(str(path.relative_to(folder)), s) for s in secrets if s.encode() in content]
    return leaks


@pytest.mark.slow
def test_a_job_with_secrets_in_its_environment_writes_none_of_them(tmp_path, model_cache):
    env = {"WANDB_API_KEY": WANDB_KEY, "HF_TOKEN": HF_TOKEN, "MEDGRPO_OPTUNA_STORAGE": DB_URL, "WANDB_MODE": "offline"}
    result = run_entrypoint("preset=tiny", "grpo.max_steps=1", "eval.limit=1", "data.eval=[pubmedqa]",
                            f"hydra.searchpath=[file://{ROOT / 'tests/fixtures/conf'}]", "+planted=from_env",
                            f"hydra.run.dir={tmp_path}", cache=model_cache.parent, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    results = read_results(tmp_path)
    assert results["config"]["logger"]["api_key"] == results["config"]["hub"]["token"] == "<redacted>"
    assert results["config"]["optuna_storage"] == "postgresql+psycopg2://medgrpo:***@127.0.0.1:1/optuna"
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")), "no W&B run file to check"
    assert not grep_every_file(tmp_path, [WANDB_KEY, HF_TOKEN, DB_PASSWORD])
    assert not [s for s in (WANDB_KEY, HF_TOKEN, DB_PASSWORD) if s in result.stdout + result.stderr]


@pytest.mark.slow
def test_an_optuna_study_on_an_unreachable_database_names_it_without_its_password(tmp_path, model_cache):
    result = run_entrypoint("-m", "hparams_search=smoke_optuna", "hydra.sweeper.storage=${oc.env:MEDGRPO_OPTUNA_STORAGE}",
                            f"hydra.sweep.dir={tmp_path / 'study'}", cache=model_cache.parent,
                            env={"MEDGRPO_OPTUNA_STORAGE": DB_URL}, timeout=120)
    assert result.returncode == 1
    assert "cannot open 'postgresql+psycopg2://medgrpo:***@127.0.0.1:1/optuna'" in result.stderr
    assert DB_PASSWORD not in result.stdout + result.stderr
    assert not grep_every_file(tmp_path, [DB_PASSWORD])
