"""The multiple-choice parser on realistic Health_Benchmarks-style rows: options embedded in the question
text in the styles such datasets use, and gold answers given as letters, lead-ins, indices or option text."""
from __future__ import annotations

import pytest

from medgrpo.data.options import answer_letter, split_embedded_options

OPTIONS = ["Insulin", "Glucagon", "Cortisol", "Epinephrine"]


@pytest.mark.parametrize("text", [
    "Which hormone lowers blood glucose?\nA) Insulin\nB) Glucagon\nC) Cortisol\nD) Epinephrine",
    "Which hormone lowers blood glucose?\n\nA. Insulin\nB. Glucagon\nC. Cortisol\nD. Epinephrine",
    "Which hormone lowers blood glucose?\nOptions:\n(A) Insulin\n(B) Glucagon\n(C) Cortisol\n(D) Epinephrine",
    "Which hormone lowers blood glucose? A) Insulin B) Glucagon C) Cortisol D) Epinephrine",
    "Which hormone lowers blood glucose? a) Insulin b) Glucagon c) Cortisol d) Epinephrine",
    "Which hormone lowers blood glucose?\nA: Insulin\nB: Glucagon\nC: Cortisol\nD: Epinephrine\n\nAnswer: A",
    "Which hormone lowers blood glucose?\n  A)  Insulin\n  B)  Glucagon\n  C)  Cortisol\n  D)  Epinephrine\n",
])
def test_embedded_option_styles(text):
    assert split_embedded_options(text) == ("Which hormone lowers blood glucose?", OPTIONS)


def test_letters_inside_the_stem_are_not_taken_for_options():
    stem, options = split_embedded_options(
        "In hepatitis B: which marker, together with vitamin A. levels, is checked? A) HBsAg B) Anti-HBs C) ALT D) INR")
    assert stem == "In hepatitis B: which marker, together with vitamin A. levels, is checked?"
    assert options == ["HBsAg", "Anti-HBs", "ALT", "INR"]
    stem, options = split_embedded_options("Blood type A: who can donate to a type A patient?\nA: A and O\nB: B and O\nC: AB only")
    assert (stem, options) == ("Blood type A: who can donate to a type A patient?", ["A and O", "B and O", "AB only"])


def test_multiline_options_are_joined():
    _, options = split_embedded_options("Best next step?\nA) Start IV fluids\n   and monitor urine output\nB) Discharge")
    assert options == ["Start IV fluids and monitor urine output", "Discharge"]


@pytest.mark.parametrize("text", ["What is the normal adult resting heart rate?",  # free text: no options
                                  "A) Insulin B) Glucagon",                          # options without a question
                                  "Pick one: A) Insulin C) Cortisol"])               # no B: not a sequence
def test_rows_without_parsable_options_raise(text):
    with pytest.raises(ValueError):
        split_embedded_options(text)


@pytest.mark.parametrize("answer,letter", [
    ("B", "B"), ("b", "B"), ("B)", "B"), ("(B)", "B"), ("B. Glucagon", "B"), ("B) Glucagon", "B"),
    ("Answer: B", "B"), ("The correct answer is B.", "B"), ("Correct option: (b)", "B"), ("Glucagon", "B"),
    ("  glucagon. ", "B"), (1, "B"), ("1", "B"), ("A", "A"),
])
def test_answer_forms(answer, letter):
    assert answer_letter(answer, OPTIONS) == letter


def test_answer_index_base_and_failures():
    assert answer_letter(4, OPTIONS, index_base=1) == "D"
    for bad in ["E", 4, "All of the above", "", None, True]:
        with pytest.raises(ValueError):
            answer_letter(bad, OPTIONS)
