"""Read a source's raw rows from the hub or from local JSONL / JSON / CSV / Parquet files.

    parts = read_source(spec)        # list[RawPart]: one per hub config/split or per local file

A RawPart gives column values as Python lists and says where row i came from ("file x.csv, line 12"), so that
the normaliser can name the bad row. Text files are decoded as UTF-8, or in the encoding the source sets
(local.encoding: gbk, gb18030, ...), or, when UTF-8 fails and none is set, in the detected one (GBK/GB2312 are
read as their superset GB18030). A file that cannot be decoded raises DataError naming the file and line.
"""
from __future__ import annotations

import codecs
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgrpo.errors import DataError

from .spec import SourceSpec

log = logging.getLogger(__name__)

MISSING = object()  # a field absent from a JSON record (as opposed to present and null)
GB_FAMILY = {"gb2312", "gbk", "cp936", "gb18030", "hz"}


@dataclass
class RawPart:
    part: str                               # hub config/split or file stem: prefixes row-number ids
    origin: str                             # for messages: "file /x/y.csv" or "hub a/b name=c split=d"
    columns: list[str]
    num_rows: int
    column: Callable[[str], list]           # column name -> values (MISSING where a record lacks it)
    locate: Callable[[int], str]            # row index -> "line 13" etc.


def read_source(spec: SourceSpec) -> list[RawPart]:
    if spec.is_local:
        return [read_local_file(path, spec) for path in spec.local_files]
    return read_hub(spec)


# ---------------------------------------------------------------- hub

def read_hub(spec: SourceSpec) -> list[RawPart]:
    """datasets.load_dataset(path, name, split=..., revision=...) for each listed config and split."""
    import datasets

    hub = spec.hub
    names = hub.get("name") if isinstance(hub.get("name"), list) else [hub.get("name")]
    splits = hub.get("split") if isinstance(hub.get("split"), list) else [hub.get("split")]
    parts = []
    for name in names:
        for split in splits:
            origin = f"hub {hub['path']}" + (f" name={name}" if name else "") + f" split={split}"
            try:
                ds = datasets.load_dataset(hub["path"], name, split=split, revision=hub.get("revision"))
            except ValueError as e:  # unknown split / config
                raise DataError(f"source '{spec.name}': {origin} cannot be loaded: {e}") from e
            except (OSError, ConnectionError) as e:
                raise DataError(f"source '{spec.name}': {origin} cannot be loaded ({type(e).__name__}: {e}). "
                                f"Offline? Point data.sources.{spec.name}.local.path at local files.") from e
            part = "/".join(str(p) for p in (name if len(names) > 1 else None,
                                              split if len(splits) > 1 else None) if p is not None)
            parts.append(_arrow_part(ds.data.table, part, origin, "row"))
    return parts


def _arrow_part(table, part: str, origin: str, unit: str) -> RawPart:
    return RawPart(part=part, origin=origin, columns=list(table.column_names), num_rows=table.num_rows,
                   column=lambda c: table.column(c).to_pylist(), locate=lambda i: f"{unit} {i + 1}")


def _records_part(records: list, part: str, origin: str, locate: Callable[[int], str]) -> RawPart:
    columns: dict[str, None] = {}
    for r in records:  # every key any record has; rows lacking one get MISSING and are reported by row
        columns.update(dict.fromkeys(r))
    return RawPart(part=part, origin=origin, columns=list(columns), num_rows=len(records),
                   column=lambda c: [r.get(c, MISSING) for r in records], locate=locate)


# ---------------------------------------------------------------- local files

def read_local_file(path: Path, spec: SourceSpec) -> RawPart:
    origin = f"file {path}"
    part = path.stem
    fmt = spec.local_format
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise DataError(f"source '{spec.name}': {origin} is not a readable Parquet file: {e}") from e
        if table.num_rows == 0:
            raise DataError(f"source '{spec.name}': {origin} is empty (no rows)")
        return _arrow_part(table, part, origin, "row")
    text = decode_file(path, spec.encoding, spec.name)
    if not text.strip():
        raise DataError(f"source '{spec.name}': {origin} is empty")
    if fmt == "jsonl":
        return _read_jsonl(text, part, origin, spec.name)
    if fmt == "json":
        return _read_json(text, part, origin, spec.name)
    return _read_csv(text, path, part, origin, spec)


def decode_file(path: Path, encoding: str | None, source: str) -> str:
    """The file's text. encoding=None: UTF-8 (BOM allowed), else the detected encoding."""
    data = path.read_bytes()
    if encoding:
        return _decode_or_explain(data, encoding, path, source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as utf8_error:
        guess = _detect_encoding(data)
        if guess is None:
            raise DataError(f"source '{source}': file {path} is not UTF-8 ({_where(data, utf8_error)}) and its "
                            "encoding could not be detected; set local.encoding (e.g. gbk, gb18030, latin-1)") from None
        log.warning("source '%s': %s is not UTF-8; decoding it as %s (detected). Set local.encoding to be explicit.",
                    source, path, guess)
        return _decode_or_explain(data, guess, path, source)


def _detect_encoding(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(data[:1_000_000]).best()
    if best is None:
        return None
    name = codecs.lookup(best.encoding).name
    return "gb18030" if name in GB_FAMILY else name


def _decode_or_explain(data: bytes, encoding: str, path: Path, source: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"source '{source}': unknown encoding {encoding!r} for file {path}") from None
    if codecs.lookup(encoding).name in GB_FAMILY:
        encoding = "gb18030"  # superset: GBK files with rare characters still decode
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"source '{source}': file {path} cannot be decoded as {encoding}: {_where(data, e)}") from None


def _where(data: bytes, error: UnicodeDecodeError) -> str:
    line = data.count(b"\n", 0, error.start) + 1
    return f"line {line}, byte {error.start}: {data[error.start:error.start + 4]!r}"


def _read_jsonl(text: str, part: str, origin: str, source: str) -> RawPart:
    records, line_numbers = [], []
    for lineno, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"source '{source}': {origin}, line {lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"source '{source}': {origin}, line {lineno}: expected a JSON object, "
                            f"got {type(record).__name__}")
        records.append(record)
        line_numbers.append(lineno)
    return _records_part(records, part, origin, lambda i: f"line {line_numbers[i]}")


def _read_json(text: str, part: str, origin: str, source: str) -> RawPart:
    """A list of records, {"data": [records]}, or an object keyed by id ({id: record}; the key becomes `__key__`)."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines saved as .json
            return _read_jsonl(text, part, origin, source)
        raise DataError(f"source '{source}': {origin}: invalid JSON at line {e.lineno}, column {e.colno} "
                        f"({e.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, list):
        bad = next((i for i, r in enumerate(data) if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataError(f"source '{source}': {origin}, record {bad + 1}: expected a JSON object")
        return _records_part(data, part, origin, lambda i: f"record {i + 1}")
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        keys = list(data)
        records = [{"__key__": k, **data[k]} for k in keys]
        return _records_part(records, part, origin, lambda i: f"key {keys[i]!r}")
    raise DataError(f"source '{source}': {origin}: expected a list of records, {{'data': [...]}} or an object "
                    "keyed by id whose values are records")


def _read_csv(text: str, path: Path, part: str, origin: str, spec: SourceSpec) -> RawPart:
    import pandas as pd

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    header = 0 if spec.csv_header else None
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, header=header, names=list(spec.csv_columns) if
                            spec.csv_columns else None, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"source '{spec.name}': {origin}: malformed CSV: {e}") from None
    if spec.csv_header and spec.csv_columns:
        missing = [c for c in spec.csv_columns if c not in frame.columns]
        if missing:
            raise DataError(f"source '{spec.name}': {origin}: header lacks column(s) {missing}; "
                            f"has {list(frame.columns)}")
    first_line = 2 if spec.csv_header else 1
    return RawPart(part=part, origin=origin, columns=[str(c) for c in frame.columns], num_rows=len(frame),
                   column=lambda c: frame[c].tolist(), locate=lambda i: f"record {i + 1} (line {i + first_line} "
                   "if no field spans lines)")
