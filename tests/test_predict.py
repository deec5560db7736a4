"""Batch prediction (medgrpo.predict): input parsing and errors, whole-line appends, then end to end on a tiny trained
job through `python -m medgrpo.predict`, graded lines, model=+adapter=, and a resume after SIGKILL."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from _run import ROOT, read_jsonl, run_module
from _tiny_job import tiny_job

from omegaconf import OmegaConf

from medgrpo.backends import resolve_model_path
from medgrpo.errors import ConfigError, DataError
from medgrpo.predict import append_lines, done_ids, parse_args, parse_items, restore_input_order, run


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="'inptu'"):
        parse_args(["inptu=x.jsonl"], ("input", "output"))
    with pytest.raises(ConfigError, match="'oops'.*key=value"):
        parse_args(["oops"], ("input",))


def test_items_from_jsonl_infer_answer_types(tmp_path):
    items = parse_items(write(tmp_path / "in.jsonl", "\n".join([
        '{"id": 7, "question": "Is it?", "answer": "Yes"}',
        '{"question": "How many?", "answer": "1,200"}',
        '',
        '{"question": "Which?", "choices": {"B": "two", "A": "one"}, "answer": "A"}',
        '{"question": "Why?"}']) + "\n"))
    # an id defaults to the record's number (the blank line is no record)
    assert [(i["id"], i["answer_type"]) for i in items] == [("7", "yesno"), ("2", "numeric"), ("3", "choice"),
                                                            ("4", "open")]
    assert items[2]["choices"] == ["one", "two"] and items[3]["answer"] is None


def test_an_input_id_0_is_kept(tmp_path):
    """0 is an id like any other (it used to become the record number: ids 0, 7 came out as 1, 7, and ids 0, 1 were
    refused as duplicates); a null or empty id is no id: the record's number stands in."""
    items = parse_items(write(tmp_path / "in.jsonl", '{"id": 0, "question": "a"}\n{"id": 7, "question": "b"}\n'
                              '{"id": 1, "question": "c"}\n{"id": null, "question": "d"}\n{"id": "", "question": "e"}\n'
                              '{"question": "f", "context": 0}\n'))
    assert [item["id"] for item in items] == ["0", "7", "1", "4", "5", "6"]
    assert items[5]["context"] == "0"  # a context 0 is text "0", not no context
    items = parse_items(write(tmp_path / "in.csv", "id,question\n0,a\n1,b\n"))
    assert [item["id"] for item in items] == ["0", "1"]


def test_items_from_csv_with_a_choices_cell(tmp_path):
    items = parse_items(write(tmp_path / "in.csv", 'id,question,choices,answer\nq1,Which organ?,"[\'Liver\', '
                              '\'Spleen\']",B\nq2,Is it safe?,,\n'))
    assert items[0]["choices"] == ["Liver", "Spleen"] and items[0]["answer_type"] == "choice"
    assert items[1] == {"id": "q2", "question": "Is it safe?", "context": "", "choices": [], "answer": None,
                        "answer_type": "open"}


@pytest.mark.parametrize(("name", "text", "message"), [
    ("in.jsonl", '{"question": "ok"}\n{"prompt": "no question"}\n', r"in\.jsonl, line 2: no 'question' field"),
    ("in.csv", "id,text\n1,hello\n", r"in\.csv, record 1 \(line 2 .*\): no 'question' field"),
    ("in.jsonl", '{"question": "ok"}\nquestion,answer\n', r"in\.jsonl, line 2: invalid JSON"),
    ("in.txt", "What is it?\n", r"in\.txt: expected a \.jsonl or \.csv file"),
    ("in.jsonl", '{"id": 1, "question": "a"}\n{"id": 1, "question": "b"}\n', r"in\.jsonl, line 2: id '1' occurs twice"),
])
def test_bad_input_names_the_file_and_line(tmp_path, name, text, message):
    with pytest.raises(DataError, match=message):
        parse_items(write(tmp_path / name, text))


def test_unknown_run_directory_fails_before_reading_anything(tmp_path):
    with pytest.raises(ConfigError, match=r"'run'.*nowhere: no such job directory"):
        run({"run": str(tmp_path / "nowhere"), "input": "missing.jsonl", "output": str(tmp_path / "o.jsonl")})
    (tmp_path / "not_a_job").mkdir()
    with pytest.raises(ConfigError, match="no results.json"):
        run({"run": str(tmp_path / "not_a_job"), "input": "missing.jsonl", "output": str(tmp_path / "o.jsonl")})


def test_appends_whole_lines_and_reads_back_ids(tmp_path):
    output = tmp_path / "out.jsonl"
    append_lines(output, [{"id": "a"}, {"id": "b"}])
    output.write_text(output.read_text() + '{"id": "c", "compl')  # a line cut by someone else's editor
    assert done_ids(output) == {"a", "b"}
    append_lines(output, [{"id": "d"}])  # starts a line of its own
    assert done_ids(output) == {"a", "b", "d"}


def test_output_is_put_back_in_input_order(tmp_path):
    output = tmp_path / "out.jsonl"
    append_lines(output, [{"id": "old"}, {"id": "q3", "completion": "x"}, {"id": "q1"}])
    output.write_text(output.read_text() + '{"id": "q2", "compl\n')  # cut by an editor: left out
    append_lines(output, [{"id": "q2"}])
    restore_input_order(output, ["q1", "q2", "q3"])
    assert read_jsonl(output) == [{"id": "old"}, {"id": "q1"}, {"id": "q2"}, {"id": "q3", "completion": "x"}]


def test_cli_error_is_one_line(tmp_path):
    done = run_module("medgrpo.predict", f"run={tmp_path}", "input=x.jsonl", "output=y.jsonl", "temperature=1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: config key 'temperature': expected key=value with a key "
                                                "among ['run', 'model', 'adapter', 'input', 'output', 'batch_size', "
                                                "'max_new_tokens']"]


QUESTIONS = [
    {"id": "yn", "question": "Is aspirin an antiplatelet drug?", "answer": "yes"},
    {"id": "mc", "question": "Which organ is removed in a splenectomy?", "choices": ["Liver", "Spleen"], "answer": "B"},
    {"id": "free", "question": "What should I do for a mild headache?"},
]


@pytest.fixture(scope="module")
def job(tmp_path_factory, model_cache):
    return tiny_job(tmp_path_factory, model_cache)


@pytest.mark.slow
def test_predict_a_job_and_a_base_plus_adapter(job, tmp_path):
    source = write(tmp_path / "in.jsonl", "".join(json.dumps(q) + "\n" for q in QUESTIONS))
    done = run_module("medgrpo.predict", f"run={job}", f"input={source}", f"output={tmp_path / 'out.jsonl'}")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line["id"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert list(lines) == ["yn", "mc", "free"]
    for line in lines.values():
        assert line["prompt"].endswith("assistant\n") and line["completion_tokens"] > 0
        assert {"completion", "extracted", "thinking_tokens", "waits", "truncated"} <= set(line)
    assert lines["yn"]["answer"] == "yes" and isinstance(lines["yn"]["correct"], bool)
    assert "A. Liver\nB. Spleen" in lines["mc"]["prompt"]  # the job's mmlu_medical template
    assert lines["mc"]["answer"] == "B" and "correct" not in lines["free"]
    # The job's eval settings (preset=tiny: 32 new tokens, budget off) hold: the random model runs to the limit.
    assert all(line["completion_tokens"] <= 32 for line in lines.values())
    # The same base and adapter named directly give the same greedy completions.
    config = json.loads((job / "results.json").read_text())["config"]
    model_dir = resolve_model_path(OmegaConf.create(config["model"]))
    direct = run_module("medgrpo.predict", f"model={model_dir}", f"adapter={job / 'adapter'}", f"input={source}",
                        f"output={tmp_path / 'direct.jsonl'}", "batch_size=3", "max_new_tokens=32")
    assert direct.returncode == 0, direct.stderr[-3000:]
    assert {line["id"]: line["completion"] for line in read_jsonl(tmp_path / "direct.jsonl")} == {
        key: line["completion"] for key, line in lines.items()}


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_repeats_nothing(job, tmp_path):
    ids = [f"q{n}" for n in range(10)]
    source = write(tmp_path / "in.jsonl", "".join(  # later questions are longer
        json.dumps({"id": key, "question": f"Is finding {key} a sign of {'severe ' * n}anaemia?", "answer": "maybe"})
        + "\n" for n, key in enumerate(ids)))
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "medgrpo.predict", f"run={job}", f"input={source}", f"output={output}",
               "batch_size=2"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not (output.is_file() and output.stat().st_size > 0):
            assert process.poll() is None, process.stderr.read()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    first = read_jsonl(output)  # every line is whole JSON
    assert 0 < len(first) < len(ids), "the kill came after the last batch: give the run more items"
    assert [line["id"] for line in first[:2]] == ["q9", "q8"]  # the longest prompts are batched first
    done = run_module("medgrpo.predict", *command[3:])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(first)} already in" in done.stderr
    lines = read_jsonl(output)
    assert [line["id"] for line in lines] == ids  # none lost, none twice, in input order
    kept = {line["id"]: line for line in lines}
    assert all(kept[line["id"]] == line for line in first)  # the lines written before the kill are kept as they were
