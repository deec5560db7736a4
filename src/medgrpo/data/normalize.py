"""Raw rows -> the project's row schema (id, source, question, answer, answer_type, choices, meta) plus context.

    rows, report = normalize_source(spec, parts)

Each raw value is checked: missing or misnamed fields, unknown yes/no labels, empty questions or contexts,
non-numeric GSM8K answers, option letters out of range, duplicate ids. With bad_rows=error the first bad row
raises DataError naming source, file and row; with bad_rows=skip it is dropped and counted in the report.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from medgrpo.errors import DataError
from medgrpo.grading.labels import YESNO_LABELS as YESNO

from .options import LETTERS, answer_letter, split_embedded_options
from .readers import MISSING, RawPart
from .spec import META_FIELDS, SourceSpec

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
MAX_BAD_EXAMPLES = 5


class BadRow(ValueError):
    """One row cannot be used; the message says which field and why."""


def normalize_number(value) -> str:
    """GSM8K-style gold -> canonical number text: '#### 1,234' -> '1234', '3.50' -> '3.5', '-0' -> '0'."""
    if isinstance(value, bool):
        raise BadRow(f"answer {value!r} is not a number")
    text = str(value)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    if not _NUMBER.match(text):
        raise BadRow(f"answer {value!r} does not end in a number (expected e.g. '#### 72')")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text.lstrip("-").lstrip("0") == "":
        return "0"
    sign = "-" if text.startswith("-") else ""
    digits = text.lstrip("-")
    whole, dot, frac = digits.partition(".")
    return sign + (whole.lstrip("0") or "0") + (dot + frac if frac else "")


def _field_name(spec: SourceSpec, role: str) -> str:
    if role.startswith("choices") and role != "choices":
        return spec.fields["choices"][int(role.removeprefix("choices"))]
    return spec.fields[role]


def _field(row_values: dict, role: str, spec: SourceSpec):
    value = row_values.get(role)
    if value is MISSING:
        raise BadRow(f"field '{_field_name(spec, role)}' ({role}) is missing")
    return value


def _dig(value, path: list[str], field_name: str):
    for key in path:
        if value is MISSING or value is None:
            return value
        if not isinstance(value, dict) or key not in value:
            raise BadRow(f"field '{field_name}' not found (no key '{key}')")
        value = value[key]
    return value


def _text(value, what: str) -> str:
    if value is None or value is MISSING or (isinstance(value, str) and not value.strip()):
        raise BadRow(f"{what} is empty")
    if isinstance(value, (dict, list)):
        raise BadRow(f"{what} is a {type(value).__name__}, expected text")
    return str(value).strip()


def _context(value, field_name: str) -> str:
    if isinstance(value, (list, tuple)):
        parts = [str(v).strip() for v in value if v is not None and str(v).strip()]
        if not parts:
            raise BadRow(f"context '{field_name}' is empty")
        return "\n".join(parts)
    return _text(value, f"context '{field_name}'")


def _choices(value, field_name) -> list[str]:
    if isinstance(value, dict):
        keys = sorted(value)
        if [k.upper() for k in keys] != list(LETTERS[: len(keys)]):
            raise BadRow(f"options '{field_name}' keys {keys} are not consecutive letters from A")
        value = [value[k] for k in keys]
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise BadRow(f"options '{field_name}' must be a list or letter->text mapping of at least 2 options")
    if len(value) > len(LETTERS):
        raise BadRow(f"options '{field_name}' has {len(value)} options; at most {len(LETTERS)} are supported")
    return [_text(v, f"option {LETTERS[i]} of '{field_name}'") for i, v in enumerate(value)]


def _one_row(values: dict, spec: SourceSpec) -> tuple[str, str, str, list[str]]:
    """-> (question, context, answer, choices) for one row's raw values."""
    f = spec.fields
    question = _text(_field(values, "question", spec), f"question '{f['question']}'")
    context = _context(_field(values, "context", spec), f["context"]) if f.get("context") else ""
    raw_answer = _field(values, "answer", spec)
    if raw_answer is None:
        raise BadRow(f"answer '{f['answer']}' is null")
    choices: list[str] = []
    if spec.answer_type == "numeric":
        answer = normalize_number(raw_answer)
    elif spec.answer_type == "open":
        answer = _text(raw_answer, f"reference answer '{f['answer']}'")
    elif spec.answer_type == "yesno":
        answer = str(raw_answer).strip().lower()
        if answer not in YESNO:
            raise BadRow(f"answer '{f['answer']}' = {raw_answer!r} is not one of yes/no/maybe")
    else:
        if spec.options_in_question:
            try:
                question, choices = split_embedded_options(question)
            except ValueError as e:
                raise BadRow(f"question '{f['question']}': {e}") from None
        elif isinstance(f["choices"], (list, tuple)):
            choices = _choices([_field(values, f"choices{i}", spec) for i in range(len(f["choices"]))],
                               "+".join(f["choices"]))
        else:
            choices = _choices(_field(values, "choices", spec), f["choices"])
        try:
            answer = answer_letter(raw_answer, choices, spec.answer_index_base)
        except ValueError as e:
            raise BadRow(f"answer '{f['answer']}': {e}") from None
    return question, context, answer, choices


def _columns(part: RawPart, spec: SourceSpec) -> dict[str, list]:
    """Column values per role; nested fields ('context.contexts') are dug out row by row."""
    wanted: dict[str, str] = {}
    for role in ("id", "question", "answer", "context", "target", *META_FIELDS):
        if spec.fields.get(role):
            wanted[role] = spec.fields[role]
    choices = spec.fields.get("choices")
    if isinstance(choices, (list, tuple)):
        wanted.update({f"choices{i}": c for i, c in enumerate(choices)})
    elif choices:
        wanted["choices"] = choices
    out = {}
    for role, name in wanted.items():
        top, *path = str(name).split(".")
        if top not in part.columns:
            raise DataError(f"source '{spec.name}': {part.origin} has no field '{top}' (for {role}; "
                            f"data.sources.{spec.name}.fields.{role.rstrip('0123456789')}); "
                            f"its fields are {part.columns}")
        values = part.column(top)
        if path:
            values = [_dig_or_bad(v, path, name) for v in values]
        out[role] = values
    return out


class _Bad:
    def __init__(self, problem: str):
        self.problem = problem


def _dig_or_bad(value, path, name):
    try:
        return _dig(value, path, name)
    except BadRow as e:
        return _Bad(str(e))


def load_id_list(path: Path) -> set[str]:
    """Ids from a JSON object (its keys), a JSON list, or a text file with one id per line."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {line.strip() for line in text.splitlines() if line.strip()}
    if isinstance(data, dict):
        return {str(k) for k in data}
    if isinstance(data, list):
        return {str(v) for v in data}
    raise DataError(f"id list {path} must be a JSON object, a JSON list or one id per line")


def _meta(values: dict) -> dict[str, str | None]:
    """The item's metadata (null where the source maps no field or the row has no value)."""
    return {role: None if values.get(role) in (None, MISSING) else str(values[role]).strip() or None
            for role in META_FIELDS}


def check_bad_rows(report: dict, source: str, max_fraction: float) -> None:
    """Rows dropped by bad_rows=skip: a warning with their count, or DataError naming the file when more than
    max_fraction (data.max_bad_row_fraction) of the source is bad: the mix would not be what the config says."""
    bad, read = report["bad_rows"], report["rows_read"]
    if not bad:
        return
    report["bad_row_fraction"] = round(bad / read, 4)
    files = ", ".join(f"{origin} ({count} bad)" for origin, count in report["bad_rows_by_file"].items())
    if bad / read > max_fraction:
        raise DataError(f"source '{source}': {bad} of {read} rows are bad ({bad / read:.0%}), more than "
                        f"data.max_bad_row_fraction={max_fraction}: {files}; first: {report['bad_row_examples'][0]}")
    log.warning("source '%s': skipped %d of %d rows as bad (%s); first: %s", source, bad, read, files,
                report["bad_row_examples"][0])


def normalize_source(spec: SourceSpec, parts: list[RawPart]) -> tuple[dict[str, list], dict]:
    """Normalise every part of a source. Returns (columns, report); columns hold id, upstream_id, source,
    question, context, answer, answer_type, choices, meta."""
    include = load_id_list(spec.include_ids) if spec.include_ids else None
    exclude = load_id_list(spec.exclude_ids) if spec.exclude_ids else set()
    out = {k: [] for k in ("id", "upstream_id", "question", "context", "answer", "choices", "meta", "target")}
    seen: dict[str, str] = {}
    report = {"origin": spec.origin, "rows_read": 0, "bad_rows": 0, "bad_row_examples": [],
              "excluded_by_id": 0, "not_in_include_list": 0, "dropped_long_context": 0}
    for part in parts:
        columns = _columns(part, spec)
        report["rows_read"] += part.num_rows
        for i in range(part.num_rows):
            values = {role: col[i] for role, col in columns.items()}
            where = f"{part.origin}, {part.locate(i)}"
            try:
                bad = next((v for v in values.values() if isinstance(v, _Bad)), None)
                if bad is not None:
                    raise BadRow(bad.problem)
                if spec.fields.get("id"):
                    upstream = _text(_field(values, "id", spec), f"id '{spec.fields['id']}'")
                else:
                    upstream = f"{part.part}:{i}" if part.part and len(parts) > 1 else str(i)
                if upstream in seen:
                    raise BadRow(f"duplicate id {upstream!r} (first at {seen[upstream]})")
                seen[upstream] = where
                if upstream in exclude:
                    report["excluded_by_id"] += 1
                    continue
                if include is not None and upstream not in include:
                    report["not_in_include_list"] += 1
                    continue
                question, context, answer, choices = _one_row(values, spec)
            except BadRow as e:
                message = f"source '{spec.name}': {where}: {e}"
                if spec.bad_rows == "error":
                    hint = f"  (set data.sources.{spec.name}.bad_rows=skip to drop such rows)"
                    raise DataError(message + hint) from None
                report["bad_rows"] += 1
                by_file = report.setdefault("bad_rows_by_file", {})
                by_file[part.origin] = by_file.get(part.origin, 0) + 1
                if len(report["bad_row_examples"]) < MAX_BAD_EXAMPLES:
                    report["bad_row_examples"].append(message)
                continue
            if spec.max_context_chars is not None and len(context) > spec.max_context_chars:
                report["dropped_long_context"] += 1
                continue
            out["id"].append(f"{spec.name}:{upstream}")
            out["upstream_id"].append(upstream)
            out["question"].append(question)
            out["context"].append(context)
            out["answer"].append(answer)
            out["choices"].append(choices)
            out["meta"].append(_meta(values))
            out["target"].append(None if values.get("target") in (None, MISSING) else str(values["target"]))
    if include is not None:
        found = len(include & set(seen))
        report["include_list"] = {"ids": len(include), "found": found}
        if found < len(include):
            report["include_list"]["missing_examples"] = sorted(include - set(seen))[:5]
    n = len(out["id"])
    out["source"] = [spec.name] * n
    out["answer_type"] = [spec.answer_type] * n
    report["normalized"] = n
    if n == 0:
        raise DataError(f"source '{spec.name}': no usable rows in {spec.origin} ({report})")
    return out, report
