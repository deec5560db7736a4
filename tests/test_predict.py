"""Batch prediction (medgrpo.predict): input parsing and errors, whole-line appends, then end to end on a tiny trained
job through `python -m medgrpo.predict`, graded lines, model=+adapter=, and a resume after SIGKILL."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from _run import ROOT, read_jsonl, run_module
from _tiny_job import tiny_job

from omegaconf import OmegaConf

from medgrpo.backends import resolve_model_path
from medgrpo.errors import ConfigError, DataError
from medgrpo.evaluation.budget import Budget
from medgrpo.evaluation.engine import Generated, Sampling
from medgrpo.predict import (Predictor, append_lines, done_ids, parse_args, parse_items, predict_file,
                             restore_input_order, run)
from medgrpo.prompting import PromptFormat


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
    # refused while reading, before any model loads (grading them would fail mid-run, naming no line)
    ("in.jsonl", '{"question": "ok"}\n{"question": "Which?", "answer_type": "bogus"}\n',
     r"in\.jsonl, line 2: answer_type 'bogus' is not one of numeric, yesno, choice, open"),
    ("in.jsonl", '{"question": "Which?", "choices": ["a", "b"], "answer": "E"}\n',
     r"in\.jsonl, line 1: choice answer 'E' is not one of the letters AB"),
    ("in.csv", "question,answer_type,answer\nHow many?,numeric,abc\n",
     r"in\.csv, record 1 \(line 2 .*\): numeric answer 'abc' is not a single number"),
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


class Killed(Exception):
    """What the scripted model raises in place of a kill."""


class ScriptedModel:
    """The generation engine of a Predictor, scripted: each prompt (decoded with the real tokenizer) is answered with
    the completion scripted for the question in it. Records the questions of each call (one call per batch);
    raises Killed at call number `killed_at`."""

    def __init__(self, tokenizer, completions: dict[str, str], batch_size: int, killed_at: int | None = None):
        self.tokenizer, self.completions, self.batch_size, self.killed_at = tokenizer, completions, batch_size, killed_at
        self.calls: list[list[str]] = []

    def generate(self, sequences, max_new_tokens, stop_strings, sampling):
        questions = [next(q for q in self.completions if q in self.tokenizer.decode(s)) for s in sequences]
        self.calls.append(questions)
        if len(self.calls) == self.killed_at:
            raise Killed
        tokens = [self.tokenizer.encode(self.completions[q], add_special_tokens=False) for q in questions]
        return [Generated(t[:max_new_tokens], ended=len(t) <= max_new_tokens) for t in tokens]


def scripted(tokenizer, completions: dict[str, str], batch_size: int = 2, killed_at: int | None = None) -> Predictor:
    """A Predictor as Predictor.load builds it (real tokenizer, prompts, budget forcing, grading), the model scripted."""
    model = ScriptedModel(tokenizer, completions, batch_size, killed_at)
    return Predictor(SimpleNamespace(tokenizer=tokenizer), model, PromptFormat(system="Answer in tags."),
                     Budget(mode="off", max_new_tokens=64), Sampling(), {}, "scripted")


def test_batches_go_longest_first_a_killed_run_resumes_and_the_output_ends_in_input_order(tmp_path, tiny_tokenizer):
    # q<n> says 'severe' n times: each question is longer than the one before it
    questions = {f"q{n}": f"Is finding {n} a sign of {'severe ' * n}anaemia?" for n in range(5)}
    items = [{"id": key, "question": q, "context": "", "choices": [], "answer": None, "answer_type": "open"}
             for key, q in questions.items()]
    completions = {q: f"<answer>\nnot {key}\n</answer>" for key, q in questions.items()}
    output = tmp_path / "out.jsonl"
    first = scripted(tiny_tokenizer, completions, batch_size=2, killed_at=3)
    with pytest.raises(Killed):
        predict_file(items, output, lambda: first)
    # longest first in batches of 2: [q4, q3], [q2, q1], then the kill during [q0]; each batch appended whole
    assert first.engine.calls == [[questions[k] for k in keys] for keys in (["q4", "q3"], ["q2", "q1"], ["q0"])]
    before = read_jsonl(output)
    assert [line["id"] for line in before] == ["q4", "q3", "q2", "q1"]
    assert [line["extracted"] for line in before] == ["not q4", "not q3", "not q2", "not q1"]

    again = scripted(tiny_tokenizer, completions, batch_size=2)
    assert predict_file(items, output, lambda: again) == 1
    assert again.engine.calls == [[questions["q0"]]]  # only what the killed run had not written
    lines = read_jsonl(output)
    assert [line["id"] for line in lines] == ["q0", "q1", "q2", "q3", "q4"]
    assert [line for line in lines if line["id"] != "q0"] == before[::-1]  # kept as they were written

    def no_model():
        raise AssertionError("nothing is left to predict: the model must not load")

    assert predict_file(items, output, no_model) == 0
    assert read_jsonl(output) == lines


def test_lines_without_a_gold_carry_the_answer_extracted_by_the_items_type(tmp_path, tiny_tokenizer):
    rows = [
        {"id": 0, "question": "Which organ is removed in a splenectomy?", "choices": ["Liver", "Spleen"]},
        {"id": 1, "question": "Is aspirin an antiplatelet drug?", "answer_type": "yesno"},
        {"id": 2, "question": "How many milligrams are 1.2 grams?", "answer_type": "numeric"},
        {"id": 3, "question": "What should I do for a mild headache?"},
        {"id": 4, "question": "Is a fever of 41 C safe?", "answer": "no"},
        {"id": 5, "question": "Which vessel carries blood to the lungs?", "choices": ["Aorta", "Pulmonary artery"],
         "answer": "B"},
    ]
    completions = {
        rows[0]["question"]: "<reasoning>\nIt removes the spleen.\n</reasoning>\n<answer>\nSpleen\n</answer>",
        rows[1]["question"]: "<answer>\nYes, it is.\n</answer>",
        rows[2]["question"]: "<answer>\nThat is 1,200 mg.\n</answer>",
        rows[3]["question"]: "<answer>\nRest and drink water.\n</answer>",
        rows[4]["question"]: "<answer>\nno\n</answer>",
        rows[5]["question"]: "The answer is B.",
    }
    items = parse_items(write(tmp_path / "in.jsonl", "".join(json.dumps(row) + "\n" for row in rows)))
    assert predict_file(items, tmp_path / "out.jsonl", lambda: scripted(tiny_tokenizer, completions, 4)) == 6
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert [line["id"] for line in lines] == ["0", "1", "2", "3", "4", "5"]
    # without a gold, each answer is read as its type reads it: the option text 'Spleen' is option B, 'Yes, it
    # is.' the label yes, '1,200 mg' the number 1200; an open answer is the answer block's text
    assert [line["extracted"] for line in lines] == ["B", "yes", "1200", "Rest and drink water.", "no", "B"]
    common = {"id", "prompt", "completion", "extracted", "completion_tokens", "thinking_tokens", "waits", "truncated"}
    assert all(set(line) == common for line in lines[:4])
    assert all(set(line) == common | {"answer", "correct", "correct_strict"} for line in lines[4:])
    # 'The answer is B.' is right, but only an <answer> block counts for correct_strict
    assert [(line["answer"], line["correct"], line["correct_strict"]) for line in lines[4:]] == [
        ("no", True, True), ("B", True, False)]
    assert "A. Aorta\nB. Pulmonary artery" in lines[5]["prompt"]  # no job template: the generic choice one
    assert lines[0]["completion"] == completions[rows[0]["question"]] and not any(line["truncated"] for line in lines)


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
@pytest.mark.scale  # a second process resumes what the killed one left: make test-scale
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
