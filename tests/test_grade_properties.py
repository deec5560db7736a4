"""Properties of the grader (hypothesis) over realistic completions built from the bundled data, and grading that
does not depend on the hash seed (issue 21 item 4)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import astuple
from fractions import Fraction
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medgrpo.grading import LETTERS, extract, grade, is_valid_answer
from medgrpo.grading.numeric import canonical
from tests.test_grade_classes import HACKS, MISSED
from tests.test_real_outputs_agreement import rows

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
URINE_OPTIONS = ["Bladder", "Kidney", "Ureter", "Urethra"]
PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _items() -> list[dict]:
    """Real items with their gold answer, the ways a model writes it, and reasoning from the item itself."""
    items = []
    for row in read_jsonl(SAMPLES / "gsm8k" / "test.jsonl")[:30]:
        working, final = row["answer"].rsplit("\n####", 1)
        gold = final.strip().replace(",", "")
        items.append({"type": "numeric", "gold": gold, "choices": None, "reasoning": working,
                      "forms": [gold, f"${gold}", f"{gold} dollars", f"**{gold}**"]})
    for row in read_jsonl(SAMPLES / "pubmedqa" / "pqa_labeled_test.jsonl")[:30]:
        gold = row["final_decision"]
        items.append({"type": "yesno", "gold": gold, "choices": None, "reasoning": row["long_answer"],
                      "forms": [gold, gold.capitalize(), gold.upper(), f"**{gold.capitalize()}**"]})
    for row in read_jsonl(SAMPLES / "mmlu_medical" / "test.jsonl")[:30]:
        gold = LETTERS[row["answer"]]
        text = row["choices"][row["answer"]]
        items.append({"type": "choice", "gold": gold, "choices": tuple(row["choices"]), "reasoning": row["question"],
                      "forms": [gold, f"({gold})", f"{gold}. {text}", f"option {gold}", text]})
    return items


ITEMS = _items()
LAYOUTS = [
    "<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>",
    "<think>\n{reasoning}\n</think>\nThe answer is {answer}.",
    "{reasoning}\n\nFinal answer: {answer}",
    "{reasoning}\n\n## Final Answer\n{answer}",
    '```json\n{{"reasoning": "brief", "answer": "{answer}"}}\n```',
]


@st.composite
def answered(draw):
    """(item, completion) with the item's gold answer written in one of the usual forms and layouts."""
    item = draw(st.sampled_from(ITEMS))
    layout = draw(st.sampled_from(LAYOUTS))
    answer = draw(st.sampled_from(item["forms"]))
    return item, layout.format(reasoning=item["reasoning"], answer=answer)


def test_generated_completions_are_read_right():  # the properties below start from correctly read answers
    for item in ITEMS:
        for layout in LAYOUTS:
            for answer in item["forms"]:
                completion = layout.format(reasoning=item["reasoning"], answer=answer)
                assert grade(completion, item["gold"], item["type"], item["choices"]).correct, completion


NEGATIONS = ["The answer is not {answer}.", "It is not {answer}.", "<answer>not {answer}</answer>",
             "Final answer: definitely not {answer}", "I would not choose {answer}.", "{answer} is incorrect."]


@PROPERTY
@given(st.sampled_from(ITEMS), st.sampled_from(LAYOUTS), st.sampled_from(NEGATIONS), st.data())
def test_negating_the_gold_never_makes_a_completion_correct(item, layout, negation, data):
    answer = data.draw(st.sampled_from(item["forms"]))
    unanswered = layout.format(reasoning=item["reasoning"], answer="unclear")
    negated = unanswered + "\n" + negation.format(answer=answer)
    graded = grade(negated, item["gold"], item["type"], item["choices"])
    before = grade(unanswered, item["gold"], item["type"], item["choices"])
    assert not graded.correct or before.correct, negated
    assert not graded.correct_strict or before.correct_strict, negated


REJECTIONS = ["Option {letter} is incorrect.", "{letter} can be ruled out.", "We can rule out ({letter}).",
              "Options {letter} and {other} are wrong.", "It is not {letter}.", "The answer is not {letter}."]


@PROPERTY
@given(answered(), st.sampled_from(REJECTIONS), st.sampled_from("ABCD"), st.sampled_from("ABCD"))
def test_appending_a_rejection_never_moves_the_answer_to_the_rejected_option(case, rejection, letter, other):
    item, completion = case
    assume(item["type"] == "choice")
    before = extract(completion, "choice", item["choices"]).extracted
    after = extract(completion + "\n" + rejection.format(letter=letter, other=other), "choice",
                    item["choices"]).extracted
    assert after != letter or before == letter
    if before not in (None, letter, other):  # rejecting other options keeps the answer
        assert after == before


FOLLOW_UPS = ["\n\nQuestion: What is the most likely diagnosis in a second patient?\nAnswer: {other}",
              "\n\nHuman: Thanks! Another one: is it safe?\n<answer>{other}</answer>",
              "\n\n### Question 2\nHow many eggs are left?\nThe answer is {other}.",
              "<|im_start|>user\nNext question.<|im_end|>\nFinal answer: {other}"]


@PROPERTY
@given(answered(), st.sampled_from(FOLLOW_UPS), st.sampled_from(["A", "B", "C", "D", "yes", "no", "maybe", "7"]))
def test_appending_a_follow_up_never_changes_the_answer(case, follow_up, other):
    item, completion = case
    before = extract(completion, item["type"], item["choices"])
    after = extract(completion + follow_up.format(other=other), item["type"], item["choices"])
    assert (after.extracted, after.extracted_strict) == (before.extracted, before.extracted_strict)


NOTATIONS = ["{m}e{k}", "{m}E{k}", "{m}×10^{k}", "{m} x 10^{k}", "{m} \\times 10^{{{k}}}", "{m}·10^{k}",
             "{m} * 10^{k}", "{m} \\cdot 10^{{{k}}}"]


@PROPERTY
@given(st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False), st.integers(-6, 9),
       st.sampled_from(NOTATIONS))
def test_scientific_notation_is_its_value(mantissa, exponent, notation):
    written = notation.format(m=mantissa, k=exponent)
    value = canonical(Fraction(str(mantissa)) * Fraction(10) ** exponent)
    assert extract(f"So the answer is {written}.", "numeric").extracted == value
    assert grade(f"<answer>{written}</answer>", value, "numeric").correct_strict


# ------------------------------------------------------------------------------------------------ hash seed

_GRADE_STDIN = """
import json, sys
from dataclasses import astuple
from medgrpo.grading import grade
for line in sys.stdin:
    row = json.loads(line)
    print(json.dumps(astuple(grade(row["completion"], row["answer"], row["answer_type"], row["choices"]))))
"""
HEDGES = [("Maybe yes", "yes", "yesno", None), ("yes or no", "no", "yesno", None), ("A, B, C, D", "C", "choice",
           ["w", "x", "y", "z"]), ("Yes. Or maybe no.", "no", "yesno", None), ("17, 18, 19", "18", "numeric", None)]


def test_grading_does_not_depend_on_the_hash_seed():
    """The same sample graded under two PYTHONHASHSEED values gives the same output (no set/dict-order choice)."""
    sample = [{"completion": row["completion"], "answer": row["answer"], "answer_type": row["answer_type"],
               "choices": row.get("choices")} for row in rows()]
    sample += [{"completion": completion, "answer": gold, "answer_type": kind, "choices": choices}
               for cases in [*MISSED.values(), *HACKS.values(), [(f"<answer>{h[0]}</answer>", *h[1:]) for h in HEDGES]]
               for completion, gold, kind, choices in cases]
    lines = "".join(json.dumps(row) + "\n" for row in sample)
    outputs = []
    for seed in ("0", "2718281828"):
        result = subprocess.run([sys.executable, "-c", _GRADE_STDIN], input=lines, capture_output=True, text=True,
                                env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120, check=True)
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    in_process = "".join(json.dumps(astuple(grade(r["completion"], r["answer"], r["answer_type"], r["choices"])))
                         + "\n" for r in sample)
    assert outputs[0] == in_process and len(outputs[0].splitlines()) == len(sample)


PIECES = ["<answer>", "</answer>", "<think>", "</think>", "<reasoning>", "</reasoning>", "Answer:", "the answer is ",
          "not ", "yes", "no", "maybe", "A", "(B)", "C.", "D)", "18", "1e3", "1.5×10^3", " or ", ", ", "\n",
          "Question:", "## Final Answer\n", '{"answer": "', '"}', "Ｂ", "\\boxed{", "}", "Kidney", " is incorrect"]


@PROPERTY
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=25),
       st.sampled_from([("numeric", "18", None), ("yesno", "yes", None), ("choice", "B", tuple(URINE_OPTIONS))]))
def test_any_text_grades_without_error_and_strict_implies_lenient(pieces, item):
    answer_type, gold, choices = item
    graded = grade("".join(pieces), gold, answer_type, choices)
    assert not graded.correct_strict or graded.correct
    for found in (graded.extracted, graded.extracted_strict):
        assert found is None or is_valid_answer(found, answer_type, choices)
