"""The grader: realistic answers right and wrong per answer type, reward-hacking attempts, malformed input, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from medgrpo.errors import DataError
from medgrpo.grade import Graded, extract, grade, grade_jsonl, main

GSM8K_REASONING = ("<reasoning>\nJanet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins with 4, "
                   "so 16 - 3 - 4 = 9 eggs are left. She sells each for $2, so she makes 9 * 2 = $18.\n</reasoning>\n")
URINE = ["Bladder", "Kidney", "Ureter", "Urethra"]  # MMLU anatomy: "...structure that collects urine..." gold A
DISHED_FACE = [  # MMLU anatomy, gold B; option A starts with the article "A"
    "a protruding mandible due to reactivation of the condylar cartilage by acromegaly.",
    "a recessive maxilla due to failure of elongation of the cranial base.",
    "an enlarged frontal bone due to hydrocephaly.",
    "defective development of the maxillary air sinus.",
]


def block(answer: str, reasoning: str = "Let me think about the question step by step.") -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>\n"


# ------------------------------------------------------------------------------------------------ numeric

@pytest.mark.parametrize("answer_block, gold", [
    ("18", "18"), ("$18", "18"), ("$18.00", "18"), ("18.0", "18"), ("18 dollars", "18"), ("**18**", "18"),
    ("\\boxed{18}", "18"), ("$\\boxed{18}$", "18"), ("The answer is 18.", "18"), ("Answer: 18", "18"),
    ("9 * 2 = 18", "18"), ("16 - 3 - 4 = 9 eggs; 9 x $2 = $18", "18"), ("$18 (9 eggs x $2)", "18"),
    ("Janet makes $18 every day.", "18"),
    ("$70,000", "70000"), ("70,000.00", "70000"), ("1,450,000", "1450000"), ("2,125 books", "2125"),
    ("-3", "-3"), ("−3", "-3"), ("-$3.50", "-3.5"), ("The temperature fell to -12 degrees", "-12"),
    ("3/4", "0.75"), ("\\frac{3}{4}", "0.75"), ("\\dfrac{1}{3}", "1/3"), ("1/3", "1/3"), ("0.75", "3/4"),
    ("25%", "25"), ("5 hours", "5"), ("x = 42", "42"), ("It takes 12 days.", "12"),
])
def test_numeric_answer_blocks_right(answer_block, gold):
    graded = grade(block(answer_block), gold, "numeric")
    assert graded.correct_strict and graded.correct, graded


@pytest.mark.parametrize("answer_block, gold", [
    ("14", "4"), ("40", "4"), ("4.5", "4"), ("1,234", "4"), ("0.4", "4"), ("-18", "18"), ("1.8", "18"),
    ("18 or 19", "18"), ("18 or 19", "19"), ("17-19", "18"), ("18, 19, 20", "19"), ("18 (or maybe 19)", "18"),
    ("18. Or maybe 19", "18"), ("eighteen", "18"), ("", "18"), ("0.333", "1/3"), ("1,23", "123"),
    ("The answer is unclear.", "18"),
])
def test_numeric_answer_blocks_wrong(answer_block, gold):
    graded = grade(block(answer_block), gold, "numeric")
    assert not graded.correct_strict and not graded.correct, graded


@pytest.mark.parametrize("completion, gold", [
    ("Janet has 9 eggs left and sells them for $2 each, so she makes 9 * 2 = $18 every day.", "18"),
    ("16 - 3 - 4 = 9\n9 * 2 = 18\nThe answer is $18.", "18"),
    ("The answer is 16. Wait, I forgot the muffins: the answer is 18.", "18"),  # self-correction: the last one
    ("She makes 9 * 2 = 18 dollars.\n#### 18", "18"),
    ("The final answer is $\\boxed{18}$.", "18"),
    ("Final answer:\n**18**", "18"),
    ("So the profit is 200,000 - 130,000 = $70,000", "70000"),
    (GSM8K_REASONING + "The answer is 18.", "18"),  # after a closed reasoning block, outside any answer block
])
def test_numeric_lenient_free_text(completion, gold):
    graded = grade(completion, gold, "numeric")
    assert graded.correct and not graded.correct_strict and not graded.has_answer_block, graded


def test_numeric_lenient_free_text_hedge_is_wrong():
    assert not grade("The answer is 18 or 19.", "18", "numeric").correct
    assert not grade("It could be 18 or 19", "19", "numeric").correct


# ------------------------------------------------------------------------------------------------ yes/no

@pytest.mark.parametrize("answer_block, gold", [
    ("yes", "yes"), ("Yes", "yes"), ("YES", "yes"), ("Yes.", "yes"), ("**Yes**", "yes"), ('"yes"', "yes"),
    ("Answer: yes", "yes"), ("The answer is yes.", "yes"), ("Yes, the trial showed a benefit.", "yes"),
    ("No", "no"), ("no.", "no"), ("NO!", "no"), ("No - the effect was not significant", "no"),
    ("maybe", "maybe"), ("Maybe.", "maybe"), ("Final answer: Maybe", "maybe"), ("\\boxed{no}", "no"),
    ("The evidence supports the hypothesis, so the answer is no.", "no"),
    # Was graded as a hedge: the "no" of "no difference" is an idiom, not a label, so a careful human reads yes.
    ("Yes, there is no difference", "yes"),
])
def test_yesno_answer_blocks_right(answer_block, gold):
    graded = grade(block(answer_block), gold, "yesno")
    assert graded.correct_strict and graded.correct, graded


@pytest.mark.parametrize("answer_block, gold", [
    ("I know", "no"), ("know", "no"), ("Nobody knows", "no"), ("None", "no"), ("not sure", "no"), ("nope", "no"),
    ("yesterday", "yes"), ("Maybelline", "maybe"), ("yes or no", "yes"), ("yes or no", "no"),
    ("yes/no/maybe", "maybe"), ("Yes, no, maybe", "yes"), ("Maybe yes", "yes"), ("Maybe yes", "maybe"),
    ("Yes. Or maybe no.", "yes"), ("", "yes"), ("no", "yes"), ("maybe", "no"),
    ("Yes, there is no difference", "no"),  # "no difference" is a determiner, not the label (issue 11)
])
def test_yesno_answer_blocks_wrong(answer_block, gold):
    graded = grade(block(answer_block), gold, "yesno")
    assert not graded.correct_strict and not graded.correct, graded


@pytest.mark.parametrize("completion, gold", [
    ("The randomized trial found a clear reduction in mortality. Therefore, yes.", "yes"),
    ("Results were mixed across centres.\nSo the answer is maybe.", "maybe"),
    ("Final answer: **No**", "no"),
    ("No.", "no"),
])
def test_yesno_lenient_free_text(completion, gold):
    assert grade(completion, gold, "yesno").correct


def test_yesno_free_text_hedge_in_final_sentence_is_wrong():
    completion = "The data are limited. It could be yes or no."
    assert grade(completion, "yes", "yesno").extracted is None


# ------------------------------------------------------------------------------------------------ choice

@pytest.mark.parametrize("answer_block", [
    "A", "a", "(A)", "A.", "A)", "[A]", "**A**", "Answer: A", "option A", "Option (A)", "The answer is A.",
    "\\boxed{A}", "A. Bladder", "(A) Bladder", "A: the bladder", "Bladder", "bladder.", "**Bladder**",
    "The correct answer is (A) Bladder.", "A because it stores urine until it is voided",
])
def test_choice_answer_blocks_right(answer_block):
    graded = grade(block(answer_block), "A", "choice", URINE)
    assert graded.correct_strict and graded.correct and graded.extracted == "A", graded


@pytest.mark.parametrize("answer_block", [
    "B", "A, B", "A or B", "A and C", "AB", "A/B", "A\nB", "A & D", "A, B, C, D", "A. Or maybe B",
    "A. Kidney",  # the letter says A, the text says B
    "Kidney or bladder", "E", "All of the above", "", "A patient", "The bladder and the kidney",
])
def test_choice_answer_blocks_wrong(answer_block):
    graded = grade(block(answer_block), "A", "choice", URINE)
    assert not graded.correct_strict and not graded.correct, graded


def test_choice_option_text_starting_with_article_is_that_option():
    graded = grade(block("A recessive maxilla due to failure of elongation of the cranial base."), "B", "choice",
                   DISHED_FACE)
    assert graded.correct_strict and graded.extracted == "B"


def test_choice_letters_outside_the_items_options_are_not_answers():
    assert grade(block("E"), "A", "choice", URINE).extracted is None
    assert grade(block("E"), "E", "choice", None).correct  # no options known: A-J are possible


@pytest.mark.parametrize("completion", [
    "The bladder stores urine, so the answer is (A).",
    "Urine is collected in the bladder.\nTherefore, A is correct.",
    "After comparing the options, the correct option is A.",
    "The kidney filters blood; the bladder stores urine.\n\nAnswer: **A. Bladder**",
    "The urine collects in the bladder.",  # the one option the final sentence names
])
def test_choice_lenient_free_text(completion):
    graded = grade(completion, "A", "choice", URINE)
    assert graded.correct and not graded.correct_strict, graded


def test_choice_options_as_dict_like_the_cli():
    options = dict(zip("ABCD", URINE))
    assert grade(block("Kidney"), "B", "choice", options).correct_strict


# ------------------------------------------------------------------------------------------------ reward hacking

HACKS = [  # (completion, gold, answer type, choices): each must give no credit, strict or lenient
    (block("A, B, C, D"), "C", "choice", URINE),                               # several options listed
    (block("A or B"), "B", "choice", URINE),
    ("The answer is A, B, C or D.", "D", "choice", URINE),
    (block("17, 18, 19"), "18", "numeric", None),
    (block("yes or no"), "no", "yesno", None),
    (block("yes/no/maybe"), "maybe", "yesno", None),
    ("<reasoning>\nhm\n</reasoning>\n<answer>\nA\n</answer>\n<answer>\nB\n</answer>", "B", "choice", URINE),  # blocks
    ("<answer>yes</answer><answer>no</answer>", "no", "yesno", None),
    ("<answer>17</answer>\n<answer>18</answer>", "18", "numeric", None),
    ("<answer>A<answer>B</answer>", "B", "choice", URINE),
    (block("14"), "4", "numeric", None),                                        # right number inside a bigger one
    (block("40"), "4", "numeric", None),
    (block("4.5"), "4", "numeric", None),
    (block("1,234"), "4", "numeric", None),
    (block("I know"), "no", "yesno", None),                                     # label words inside other words
    (block("Not known"), "no", "yesno", None),
    (block("yesterday"), "yes", "yesno", None),
    (block("Abstain"), "A", "choice", URINE),
    (block(""), "18", "numeric", None),                                         # empty answers
    ("<reasoning>\nSo yes.\n</reasoning>\n<answer></answer>", "yes", "yesno", None),
    ("", "yes", "yesno", None),
    ("<reasoning>\nThe answer is 18.\n</reasoning>", "18", "numeric", None),  # the answer only in the reasoning
    ("<reasoning>\nThe bladder, so the answer is A.\n</reasoning>\n<answer>\n\n</answer>", "A", "choice", URINE),
    ("<think>\nThe answer is yes.\n</think>", "yes", "yesno", None),
    ("<reasoning>\nJanet makes 9 * 2 = 18 dollars, so the answer is 18", "18", "numeric", None),  # truncated
]


@pytest.mark.parametrize("completion, gold, answer_type, choices", HACKS)
def test_reward_hacking_attempts_get_no_credit(completion, gold, answer_type, choices):
    graded = grade(completion, gold, answer_type, choices)
    assert not graded.correct and not graded.correct_strict, graded


# ------------------------------------------------------------------------------------------------ blocks

def test_strict_needs_exactly_one_block_and_lenient_accepts_agreeing_blocks():
    graded = grade("<answer>B</answer> and to be sure: <answer>B</answer>", "B", "choice", URINE)
    assert graded.correct and not graded.correct_strict and graded.extracted_strict is None


def test_the_answer_block_wins_over_text_outside_it():
    graded = grade(block("18") + "Actually, the answer is 19.", "18", "numeric")
    assert graded.correct_strict and graded.correct


def test_unclosed_answer_block_is_read_leniently_unless_cut_mid_tag():
    assert grade("<reasoning>\nx\n</reasoning>\n<answer>\n18\n", "18", "numeric").correct
    cut = grade("<reasoning>\nx\n</reasoning>\n<answer>\n18</ans", "18", "numeric")
    assert not cut.correct and not cut.has_answer_block


def test_strict_implies_lenient_and_graded_fields():
    graded = grade(block("18"), "18", "numeric")
    assert graded == Graded(extracted="18", correct=True, extracted_strict="18", correct_strict=True,
                            has_answer_block=True)


def test_chat_completions_are_graded_like_strings():
    assert grade([{"role": "assistant", "content": block("yes")}], "yes", "yesno").correct_strict


def test_extract_needs_no_gold():
    found = extract(block("B. Kidney"), "choice", URINE)
    assert (found.extracted, found.extracted_strict, found.has_answer_block) == ("B", "B", True)


# ------------------------------------------------------------------------------------------------ bad input

MALFORMED = [
    "", "   ", "<answer>", "</answer>", "<answer></answer>", "<reasoning>", "<reasoning>\nThe answer is 1",
    "<answer>1</ans", "<reas", "\ud800\udfff<answer>\udcff</answer>", "\x00\x01\x02", "$$$$", "\\boxed{",
    "\\boxed{\\boxed{1}", None, 42, ["not a message"], [{"role": "assistant"}],
]


@pytest.mark.parametrize("completion", MALFORMED)
@pytest.mark.parametrize("answer_type, gold, choices", [("numeric", "7", None), ("yesno", "yes", None),
                                                         ("choice", "C", URINE)])
def test_malformed_completions_score_zero_and_never_raise(completion, answer_type, gold, choices):
    graded = grade(completion, gold, answer_type, choices)
    assert not graded.correct and not graded.correct_strict


@pytest.mark.parametrize("huge", [
    "1" * 1_000_000, "1 " * 500_000, "answer is " * 100_000, "<answer>" * 100_000, "</answer>" * 100_000,
    "(" * 1_000_000, "\n" * 1_000_000 + "x", "A) " * 300_000, "yes no " * 150_000, "\\boxed{" * 100_000,
    "<answer>" + "1 or " * 200_000 + "</answer>", "-" * 1_000_000, "1,000," * 150_000, "<reasoning>" + "x" * 10**6,
    "<answer>" + " " * 1_000_000 + "x</answer>", "the correct option is " * 50_000, "####" * 250_000,
])
def test_megabyte_inputs_are_graded_in_linear_time(huge):
    start = time.perf_counter()
    for answer_type, gold, choices in (("numeric", "1", None), ("yesno", "yes", None), ("choice", "A", URINE)):
        grade(huge, gold, answer_type, choices)
    assert time.perf_counter() - start < 5.0  # catastrophic backtracking would take hours


@pytest.mark.parametrize("gold, answer_type, choices", [
    ("seventy", "numeric", None), ("18 or 19", "numeric", None), ("perhaps", "yesno", None), ("E", "choice", URINE),
    ("AB", "choice", None), ("A", "free_text", None),
])
def test_invalid_gold_or_answer_type_is_a_data_error(gold, answer_type, choices):
    with pytest.raises(DataError):
        grade("<answer>A</answer>", gold, answer_type, choices)


def test_choices_dict_with_gaps_is_a_data_error():
    with pytest.raises(DataError, match="letters"):
        grade("A", "A", "choice", {"A": "x", "C": "y"})


# ------------------------------------------------------------------------------------------------ CLI

def test_grade_jsonl_adds_fields_and_keeps_the_rest():
    lines = [json.dumps({"id": "q1", "completion": block("B"), "answer": "B", "choices": dict(zip("ABCD", URINE))}),
             "",
             json.dumps({"id": "q2", "completion": "The kidney.", "answer": "B", "choices": dict(zip("ABCD", URINE))})]
    rows = grade_jsonl(lines, "choice")
    assert [(r["id"], r["extracted"], r["correct"], r["correct_strict"]) for r in rows] == [
        ("q1", "B", True, True), ("q2", "B", True, False)]


@pytest.mark.parametrize("line, field", [
    ('{"answer": "18"}', "'completion'"), ('{"completion": "18"}', "'answer'"),
    ('{"completion": "18", "answer": "eighteen"}', "'answer'"), ('{"completion": 18, "answer": "18"}', "'completion'"),
    ('{"completion": "18", "answer": "18", "choices": 3}', "'choices'"), ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_grade_jsonl_bad_line_names_line_number_and_field(line, field):
    good = json.dumps({"completion": "18", "answer": "18"})
    with pytest.raises(DataError) as error:
        grade_jsonl([good, line], "numeric", "preds.jsonl")
    assert "preds.jsonl line 2" in str(error.value) and field in str(error.value)


def test_cli_main_writes_graded_lines_and_reports_errors(tmp_path, capsys):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps({"completion": block("yes"), "answer": "yes"}) + "\n"
                    + json.dumps({"completion": "I know.", "answer": "no"}) + "\n")
    assert main(["--answer-type", "yesno", str(path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["extracted"], r["correct"], r["correct_strict"]) for r in rows] == [("yes", True, True),
                                                                                    (None, False, False)]
    path.write_text('{"completion": "yes"}\n')
    assert main(["--answer-type", "yesno", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "line 1" in captured.err and "'answer'" in captured.err


def test_cli_module_reads_stdin_with_non_utf8_bytes():
    line = json.dumps({"completion": "<answer>18</answer>", "answer": 18}).encode() + b"\n"
    broken = b'{"completion": "\xff\xfe <answer>7</answer>", "answer": "7"}\n'
    result = subprocess.run([sys.executable, "-m", "medgrpo.grade", "--answer-type", "numeric", "-"],
                            input=line + broken, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    rows = [json.loads(text) for text in result.stdout.decode().splitlines()]
    assert [(r["extracted"], r["correct"], r["correct_strict"]) for r in rows] == [("18", True, True),
                                                                                    ("7", True, True)]
