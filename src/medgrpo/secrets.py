"""Secrets (API keys, tokens, passwords) come from environment variables and never reach a file or a log.

    is_secret(key, value)              does this config value hold a credential?
    redact_url_passwords(text)         postgresql://user:pass@host/db -> postgresql://user:***@host/db
    secret_overrides_message(argv)     why a command line must be refused, or None (src/run.py exits with it)

A key names a secret when its last part contains api_key, password or secret, or is a token word (token,
hf_token, token_secret; not max_new_tokens or tokenizer), unless it ends in _env: judge.api_key_env holds the
NAME of the variable with the key, which belongs in the record. Numbers, booleans and None are never secrets, so
budget.max_thinking_tokens=512 stays in results.json. A *_token value must also look like a credential
(letters, digits and -_.=+/: only): "<|endoftext|>" is a tokenizer's pad_token, "hf_AbC..." is a key.
"""
from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
_ALWAYS_SECRET = re.compile(r"api_?key|passw(or)?d|secret")
_TOKEN_WORD = re.compile(r"(^|_)token(_|$)")
_CREDENTIAL = re.compile(r"[A-Za-z0-9_\-.=+/:]{8,}")
# scheme://user:password@host: the user stops at ':' or '/'; the password runs to the last '@' before a space,
# so an unencoded '@' in it is masked too (masking a little more than the password is harmless).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<password>\S+)@")
_ENV_INTERPOLATION = re.compile(r"\$\{oc\.env:[^}]+\}")
# Where the usual secrets live; any other key gets MEDGRPO_<KEY> (logger.api_key -> wandb reads WANDB_API_KEY).
KNOWN_ENV_VARS = {"logger.api_key": "WANDB_API_KEY", "hydra.sweeper.storage": "MEDGRPO_OPTUNA_STORAGE"}


def _normal(key: Any) -> str:
    return str(key).rsplit(".", 1)[-1].lower().replace("-", "_")


def is_secret(key: Any, value: Any) -> bool:
    """Whether `value`, stored under config key `key` (dotted or not), is a credential to hide."""
    if not isinstance(value, str) or not value:
        return False
    name = _normal(key)
    if name.endswith("_env"):
        return False
    if _ALWAYS_SECRET.search(name):
        return True
    return bool(_TOKEN_WORD.search(name) and _CREDENTIAL.fullmatch(value))


def redact_url_passwords(text: str) -> str:
    return _URL_PASSWORD.sub(lambda m: m["head"] + MASK + "@", text)


def env_var_for(key: str) -> str:
    return KNOWN_ENV_VARS.get(key) or "MEDGRPO_" + re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_").upper()


def _literal_values(override) -> list[str]:
    """The string values an override sets (all of them for a sweep), without ${oc.env:...} interpolations."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    values = value.list if isinstance(value, ChoiceSweep) else value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str) and not _ENV_INTERPOLATION.fullmatch(v.strip())]


def secret_overrides_message(argv: list[str]) -> str | None:
    """One line naming the first override that puts a literal secret on the command line, or None.

    Hydra writes every override into .hydra/overrides.yaml, .hydra/hydra.yaml and the job folder's name before
    the job starts, so this runs on sys.argv before hydra.main. A value read from the environment
    (key='${oc.env:NAME}') is fine: Hydra stores the interpolation, not the secret."""
    from hydra._internal.utils import get_args_parser  # exactly the arguments hydra.main will parse
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    arguments, _ = get_args_parser().parse_known_args(argv)
    for text in arguments.overrides:
        try:
            [override] = OverridesParser.create().parse_overrides([text])
        except OverrideParseException:
            continue  # Hydra reports its own syntax errors
        key = override.key_or_group
        for value in _literal_values(override):
            if is_secret(key, value) or redact_url_passwords(value) != value:
                env = env_var_for(key)
                return (f"error: '{key}' was given a literal secret on the command line, which Hydra would write "
                        f"to .hydra/ and the job folder's name; export {env}=... and pass {key}='${{oc.env:{env}}}' "
                        f"instead")
    return None


class RedactUrlPasswords(logging.Filter):
    """A logging filter that masks URL passwords in a record's message (e.g. Optuna storage URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url_passwords(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def mask_url_passwords_in_logs(*loggers: logging.Logger) -> None:
    """Attach RedactUrlPasswords to each logger once (module code may run more than once under Hydra)."""
    for logger in loggers:
        if not any(isinstance(f, RedactUrlPasswords) for f in logger.filters):
            logger.addFilter(RedactUrlPasswords())
