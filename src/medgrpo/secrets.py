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
_ENV_REFERENCE = re.compile(r"\$\{oc\.env:\s*([^,}\s]+)")
# Where the usual secrets live (W&B and the Hugging Face hub read these themselves); others get MEDGRPO_<KEY>.
KNOWN_ENV_VARS = {"logger.api_key": "WANDB_API_KEY", "hydra.sweeper.storage": "MEDGRPO_OPTUNA_STORAGE"}


def _name(key: Any) -> str:
    return str(key).rsplit(".", 1)[-1].lower().replace("-", "_")


def _names_secret(key: Any) -> bool:
    name = _name(key)
    return not name.endswith("_env") and bool(_ALWAYS_SECRET.search(name) or _TOKEN_WORD.search(name))


def is_secret(key: Any, value: Any) -> bool:
    """Whether `value`, stored under config key `key` (dotted or not), is a credential to hide."""
    if not isinstance(value, str) or not value or not _names_secret(key):
        return False
    return bool(_ALWAYS_SECRET.search(_name(key)) or _CREDENTIAL.fullmatch(value))


def redact_url_passwords(text: str) -> str:
    return _URL_PASSWORD.sub(lambda m: m["head"] + MASK + "@", text)


def env_var_for(key: str) -> str:
    return KNOWN_ENV_VARS.get(key) or "MEDGRPO_" + re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_").upper()


def _string_values(override) -> list[str]:
    """The string values an override sets (every value of a sweep)."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    values = value.list if isinstance(value, ChoiceSweep) else value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str)]


def _leaks(key: str, value: str) -> bool:
    """Would this command-line value put a secret in a job file? A job key's ${oc.env:...} does too: Hydra
    resolves it into the job folder's name, the recorded overrides and the W&B run name. A hydra.* key's
    interpolation is stored as written (hydra.sweeper.storage='${oc.env:MEDGRPO_OPTUNA_STORAGE}' is safe)."""
    references = _ENV_REFERENCE.findall(value)
    if key.startswith("hydra."):
        return not references and (is_secret(key, value) or redact_url_passwords(value) != value)
    return (is_secret(key, value) or redact_url_passwords(value) != value
            or (bool(references) and _names_secret(key)) or any(_names_secret(name) for name in references))


def secret_overrides_message(argv: list[str]) -> str | None:
    """One line naming the first override that puts a secret on the command line, or None.

    Hydra writes the overrides into .hydra/, the job folder's name and results.json before the job starts, so
    src/run.py calls this on sys.argv before hydra.main."""
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
        values = _string_values(override)
        if any(_leaks(key, value) for value in values):
            referenced = [name for value in values for name in _ENV_REFERENCE.findall(value)]
            env = referenced[0] if referenced else env_var_for(key)
            use = (f"pass {key}='${{oc.env:{env}}}'" if key.startswith("hydra.")
                   else f"read it in a config file as ${{oc.env:{env}}}")
            return (f"error: '{key}' gets a secret on the command line, which Hydra would write into .hydra/, the "
                    f"job folder's name and results.json; export {env}=... and {use}")
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
