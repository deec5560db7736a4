"""Local files: JSONL, JSON, CSV and Parquet give the same rows as the hub layout; GBK/GB18030 CSVs decode;
bad input fails before training with a message naming the source, file, field and row."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from medgrpo.data import parse_source
from medgrpo.data.normalize import normalize_source
from medgrpo.data.readers import read_source
from medgrpo.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
SOURCES = ROOT / "conf" / "data" / "sources"
MEDMCQA_ROWS = [json.loads(line) for line in (FIXTURES / "medmcqa.jsonl").open()]
CMED_CSV = FIXTURES / "cmed_mc_gbk.csv"
CSV_FIELDS = {"id": None, "answer": "answer", "choices": ["A", "B", "C", "D"]}  # a local MC layout


def load(stem: str, path: Path, *, fields=None, **overrides) -> tuple[dict, dict]:
    cfg = OmegaConf.load(SOURCES / f"{stem}.yaml")
    cfg.local.path = str(path)
    if fields:
        cfg.local.fields = fields
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    spec = parse_source(stem, cfg, ROOT)
    return normalize_source(spec, read_source(spec))


def write(path: Path, text: str, encoding="utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "json_keyed", "csv", "parquet"])
def test_every_local_format_gives_the_same_rows(tmp_path, fmt):
    flat = [{k: v for k, v in r.items() if k in ("id", "question", "opa", "opb", "opc", "opd", "cop")} for r in MEDMCQA_ROWS]
    fields = None
    if fmt == "jsonl":
        path = write(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in flat))
    elif fmt == "json":
        path = write(tmp_path / "m.json", json.dumps(flat, indent=1))
    elif fmt == "json_keyed":  # {id: record}, like PubMedQA's ori_pqal.json
        path = write(tmp_path / "m.json", json.dumps({r["id"]: {k: v for k, v in r.items() if k != "id"} for r in flat}))
        fields = {"id": "__key__"}
    elif fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
        path = write(tmp_path / "m.csv", buf.getvalue())
    else:
        path = tmp_path / "m.parquet"
        pq.write_table(pa.Table.from_pylist(flat), path)
    rows, _ = load("medmcqa", path, fields=fields)
    expected, _ = load("medmcqa", FIXTURES / "medmcqa.jsonl")
    assert rows == expected


def test_gbk_csv_is_detected_and_decoded(tmp_path):
    rows, _ = load("medmcqa", CMED_CSV, fields=CSV_FIELDS)
    assert rows["question"][0] == "高血压患者长期服用以下哪类药物最可能引起干咳？"
    assert rows["choices"][2][2] == "铜绿假单胞菌"
    assert rows["answer"] == ["A", "A", "B", "C"]
    explicit, _ = load("medmcqa", CMED_CSV, fields=CSV_FIELDS, **{"local.encoding": "gbk"})
    assert explicit == rows


def test_gb18030_characters_beyond_gbk_decode(tmp_path):
    text = "question,A,B,C,D,answer\n罕见病䶮综合征的首选检查是,基因检测,血常规,尿常规,胸片,A\n"
    path = write(tmp_path / "rare.csv", text, encoding="gb18030")
    rows, _ = load("medmcqa", path, fields=CSV_FIELDS, **{"local.encoding": "gbk"})
    assert rows["question"] == ["罕见病䶮综合征的首选检查是"]


def test_undecodable_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"question": "ok", "answer": "#### 1"}\n{"question": "caf\xe9 \xff\xfe", "answer": "#### 2"}\n')
    with pytest.raises(DataError, match=r"source 'gsm8k_train': file .*bad\.jsonl cannot be decoded as utf-8: line 2"):
        load("gsm8k_train", path, **{"local.encoding": "utf-8"})


def test_headerless_csv_needs_column_names():
    with pytest.raises(ConfigError, match=r"data\.sources\.mmlu_medical\.local\.csv_columns"):
        load("mmlu_medical", CMED_CSV, **{"local.csv_header": False})


def test_malformed_csv_and_json_lines_are_located(tmp_path):
    path = write(tmp_path / "bad.csv", 'question,A,B,C,D,answer\n"q1",a,b,c,d,A\n"q2",a,b,c,d,A,extra,fields\n')
    with pytest.raises(DataError, match=r"source 'medmcqa': file .*bad\.csv: malformed CSV: .*line 3"):
        load("medmcqa", path, fields=CSV_FIELDS)
    path = write(tmp_path / "bad.jsonl", '{"question": "a", "answer": "#### 1"}\n{"question": "b", "answer": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: invalid JSON"):
        load("gsm8k_train", path)


def test_misnamed_field_lists_the_fields_the_file_has():
    with pytest.raises(DataError, match=r"has no field 'Question' .*fields\.question.*\['question', 'answer'\]"):
        load("gsm8k_train", FIXTURES / "gsm8k_train.jsonl", **{"fields.question": "Question"})


def test_row_level_problems_name_the_row(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "pqa_labeled.jsonl").open()][:2]
    bad_label = [dict(rows[0]), {**rows[1], "final_decision": "probably"}]
    path = write(tmp_path / "p.jsonl", "".join(json.dumps(r) + "\n" for r in bad_label))
    with pytest.raises(DataError, match=r"source 'pubmedqa_labeled_pool': file .*p\.jsonl, line 2: answer "
                                        r"'final_decision' = 'probably' is not one of yes/no/maybe"):
        load("pubmedqa_labeled_pool", path)
    empty_context = [{**rows[0], "context": {**rows[0]["context"], "contexts": []}}]
    path = write(tmp_path / "c.jsonl", json.dumps(empty_context[0]) + "\n")
    with pytest.raises(DataError, match=r"line 1: context 'context.contexts' is empty"):
        load("pubmedqa_labeled_pool", path)
    missing = [rows[0], {k: v for k, v in rows[1].items() if k != "final_decision"}]
    path = write(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in missing))
    with pytest.raises(DataError, match=r"m\.jsonl, line 2: field 'final_decision' \(answer\) is missing"):
        load("pubmedqa_labeled_pool", path)
    del missing[0]["final_decision"]  # no row has it: the field name is wrong, not a row
    path = write(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in missing))
    with pytest.raises(DataError, match=r"m\.jsonl has no field 'final_decision' \(for answer; "
                                        r"data\.sources\.pubmedqa_labeled_pool\.fields\.answer\)"):
        load("pubmedqa_labeled_pool", path)


def test_bad_answers_are_reported_and_skip_mode_counts_them(tmp_path):
    rows = [{"question": "How many?", "answer": "He has 5.\n#### 5"},
            {"question": "How much?", "answer": "no final number here"},
            {"question": "", "answer": "#### 3"}]
    path = write(tmp_path / "g.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"line 2: answer 'no final number here' does not end in a number"):
        load("gsm8k_train", path)
    got, report = load("gsm8k_train", path, bad_rows="skip")
    assert got["answer"] == ["5"]
    assert report["bad_rows"] == 2 and "line 3: question 'question' is empty" in report["bad_row_examples"][1]
    cop_out_of_range = [{**MEDMCQA_ROWS[0], "cop": 4}]
    path = write(tmp_path / "mm.jsonl", json.dumps(cop_out_of_range[0]) + "\n")
    with pytest.raises(DataError, match=r"answer 'cop': answer index 4 is out of range for 4 options"):
        load("medmcqa", path)
    duplicate = write(tmp_path / "dup.jsonl", (json.dumps(MEDMCQA_ROWS[0]) + "\n") * 2)
    with pytest.raises(DataError, match=r"line 2: duplicate id '45258d3d-b974-44dd-a161-c3fccbf3f7c3' \(first at .*line 1\)"):
        load("medmcqa", duplicate)


def test_missing_local_file_and_unknown_extension_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.sources\.gsm8k_train\.local\.path.*does not exist"):
        load("gsm8k_train", tmp_path / "nope.jsonl")
    odd = write(tmp_path / "rows.txt", "x")
    with pytest.raises(ConfigError, match=r"data\.sources\.gsm8k_train\.local\.format"):
        load("gsm8k_train", odd)


def test_gsm8k_numbers_are_normalised():
    from medgrpo.data.normalize import normalize_number

    assert [normalize_number(a) for a in ["#### 1,234", "#### -3.50", "x\n#### $70", "#### 0.0", 42]] == \
           ["1234", "-3.5", "70", "0", "42"]
