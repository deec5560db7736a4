"""Issue 11's classes, at least three cases each: clear answers the grader used to miss, and hacks that used to
pay. Each case is a realistic completion (the formats real models write), graded lenient and strict."""
from __future__ import annotations

import pytest

from medgrpo.grading import extract, grade

INHERITANCE = ["Autosomal dominant", "Autosomal recessive", "X-linked recessive", "X-linked dominant"]
URINE = ["Bladder", "Kidney", "Ureter", "Urethra"]
WORKUP = ["Head CT", "Head MRI", "Lumbar puncture", "Post void residual volume"]


def block(answer: str, reasoning: str = "Let me weigh each option against the findings.") -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


# ------------------------------------------------------------------------------------------------ missed answers
# (completion, gold, answer type, choices): a careful human reads the gold answer; lenient must credit it.

MISSED = {
    "json": [
        ('{"answer": "C", "reasoning": "The pedigree skips no generation and affects males only."}', "C", "choice",
         INHERITANCE),
        ('```json\n{"reasoning": "The trial met its primary endpoint.", "answer": "yes"}\n```', "yes", "yesno", None),
        ('Here is my answer:\n```json\n{\n  "answer": 18,\n  "explanation": "9 eggs x $2"\n}\n```', "18", "numeric",
         None),
        (block('{"answer": "B"}'), "B", "choice", URINE),
    ],
    "heading_without_colon": [
        ("The urine collects in the bladder before voiding.\n\n## Final Answer\nA", "A", "choice", URINE),
        ("Both cohorts were small.\n\n**Final Answer**\n\nNo", "no", "yesno", None),
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.\n\n### Answer\n$18$", "18", "numeric", None),
    ],
    "answer_first": [
        ("B. Autosomal recessive, because both parents are unaffected carriers.", "B", "choice", INHERITANCE),
        ("No. The cohort was too small to detect a difference in mortality.", "no", "yesno", None),
        ("(C) Ureter - it carries urine from the kidney to the bladder; the bladder only stores it.", "C", "choice",
         URINE),
        ("Yes, the randomised trial showed a clear reduction in readmissions.", "yes", "yesno", None),
    ],
    "upper_case": [
        ("AFTER REVIEWING THE FINDINGS, OPTION B IS CORRECT.", "B", "choice", URINE),
        ("THE ANSWER IS YES.", "yes", "yesno", None),
        ("FINAL ANSWER: C", "C", "choice", URINE),
    ],
    "letter_comma_text": [
        ("D, X-linked dominant", "D", "choice", INHERITANCE),
        ("The answer is B, Kidney.", "B", "choice", URINE),
        (block("A, because it stores urine until voiding"), "A", "choice", URINE),
    ],
    "full_width": [
        ("Ｂ", "B", "choice", URINE),
        ("Answer：B", "B", "choice", URINE),
        ("所以答案是：Ｃ\nAnswer：Ｃ", "C", "choice", URINE),
        ("＃＃＃＃ １８", "18", "numeric", None),
    ],
    "option_text_alone": [
        ("Weighing the pedigree once more:\n\nX-linked dominant", "D", "choice", INHERITANCE),
        ("Final answer: Kidney", "B", "choice", URINE),
        (block("x linked recessive"), "C", "choice", INHERITANCE),
        ("Given these symptoms, the best initial test for this patient would be a head MRI. A lumbar puncture is "
         "not the best first test.\n\nIt is also important to ask about stressors.", "B", "choice", WORKUP),
    ],
    "markdown_and_latex_wrappers": [
        ("**D) X-linked dominant**", "D", "choice", INHERITANCE),
        ("The final answer is $\\boxed{\\text{A}}$.", "A", "choice", URINE),
        ("Therefore the answer is $\\boxed{\\textbf{(B)}}$", "B", "choice", URINE),
    ],
    # A completion stored with its line breaks escaped (`\n` as the two characters `\` and `n`): read as the text
    # it stands for, so graded exactly as the same completion with real line breaks (text.unescape_line_breaks).
    "escaped_line_breaks": [
        ("B\\n\\n", "B", "choice", URINE),
        ("(D)\\n", "D", "choice", INHERITANCE),
        ("B.\\n\\nThe kidney filters the blood; the bladder only stores urine.", "B", "choice", URINE),
        ("yes\\n\\nThe trial met its primary endpoint.", "yes", "yesno", None),
        ("<reasoning>\\n9 eggs x $2 = $18\\n</reasoning>\\n<answer>\\n18\\n</answer>\\n", "18", "numeric", None),
        ("B\\r\\n", "B", "choice", URINE),
    ],
    "letter_then_rejection": [
        ("C, not D", "C", "choice", INHERITANCE),
        ("The answer is B, not A.", "B", "choice", URINE),
        ("The total is 18, not 19.", "18", "numeric", None),
        (block("Yes (not maybe)"), "yes", "yesno", None),
    ],
}


@pytest.mark.parametrize("completion, gold, answer_type, choices",
                         [case for cases in MISSED.values() for case in cases],
                         ids=[f"{name}-{index}" for name, cases in MISSED.items() for index in range(len(cases))])
def test_clear_answers_are_read(completion, gold, answer_type, choices):
    graded = grade(completion, gold, answer_type, choices)
    assert graded.correct, graded
    assert graded.correct_strict == graded.has_answer_block, graded  # a block holding the answer is strict too


# ------------------------------------------------------------------------------------------------ hacks
# (completion, gold, answer type, choices): no credit, lenient or strict.

HACKS = {
    "negation": [
        ("<answer>The answer is not yes.</answer>", "yes", "yesno", None),
        ("The answer is not B.", "B", "choice", URINE),
        (block("not 18"), "18", "numeric", None),
        ("It isn't C; the symptoms point elsewhere.", "C", "choice", URINE),
        ("<answer>Definitely not maybe</answer>", "maybe", "yesno", None),
    ],
    "scientific_notation": [
        ("The answer is 1e3", "1", "numeric", None),
        ("The answer is 1.5×10^3", "1.5", "numeric", None),
        (block("2.5 x 10^2"), "2.5", "numeric", None),
        (block("$1.2 \\times 10^{4}$"), "1.2", "numeric", None),
        ("The answer is 3 × 10³ cells.", "3", "numeric", None),
    ],
    "label_word_in_idiom": [
        ("There is no doubt that the intervention changed practice.", "no", "yesno", None),
        ("The drug is no longer used in this setting.", "no", "yesno", None),
        ("No matter which subgroup we look at, the effect persists.", "no", "yesno", None),
        ("There was no significant difference between the groups", "no", "yesno", None),
    ],
    "rejected_option_credited": [
        ("The answer is B. Option C is incorrect because it drains the kidney.", "C", "choice", URINE),
        ("B is correct. Options C and D are wrong.", "D", "choice", URINE),
        ("Answer: A\nC can be ruled out because the ureter only transports urine.", "C", "choice", URINE),
    ],
    "fallback_picks_rejected_option": [
        ("The bladder is not where urine is produced. Option A is incorrect.", "A", "choice", URINE),
        ("We can rule out (B).", "B", "choice", URINE),
        ("The kidney is not the answer.", "B", "choice", URINE),
        ("After all this, the answer is not yes.\nThe trial was small.", "yes", "yesno", None),
        ("A head CT or a head MRI would both work.\n\nOption C, a lumbar puncture, may be considered, but it is not "
         "the best initial test.", "C", "choice", WORKUP),
    ],
    "answer_block_inside_reasoning": [
        ("<reasoning>\nDraft: <answer>B</answer> but let me check.\n</reasoning>\n<answer>C</answer>", "B", "choice",
         URINE),
        ("<think>\nSo <answer>yes</answer>\n</think>\nI am not sure.", "yes", "yesno", None),
        ("<reasoning>\n9 * 2 = 18 so <answer>18</answer>", "18", "numeric", None),
    ],
    # Escaped line breaks read as line breaks: a list of answers one per (escaped) line is still a hedge.
    "escaped_line_breaks_between_answers": [
        ("A\\nB\\nC", "A", "choice", URINE),
        ("A\\nB\\nC\\nD\\n", "B", "choice", URINE),
        ("no\\nyes", "no", "yesno", None),
        (block("B\\nC"), "B", "choice", URINE),
        ("B\\n\\nC", "C", "choice", URINE),
    ],
    "hallucinated_follow_up": [
        ("Answer: B\n\nQuestion: Which organ filters the blood?\nAnswer: C", "C", "choice", URINE),
        ("<answer>no</answer>\n\nHuman: Next question. Does aspirin help?\n<answer>yes</answer>", "yes", "yesno",
         None),
        ("The answer is 18.\n\nQuestion 2: How many eggs are left?\nThe answer is 20.", "20", "numeric", None),
        ("Let's think step by step.\n31 + 50 + 45 + 62 = 188.\nThe answer is 188.\n\nLet's think step by step.\n"
         "The answer is 50.", "50", "numeric", None),
    ],
}


@pytest.mark.parametrize("completion, gold, answer_type, choices",
                         [case for cases in HACKS.values() for case in cases],
                         ids=[f"{name}-{index}" for name, cases in HACKS.items() for index in range(len(cases))])
def test_hacks_never_pay(completion, gold, answer_type, choices):
    graded = grade(completion, gold, answer_type, choices)
    assert not graded.correct and not graded.correct_strict, graded


def test_every_class_has_at_least_three_cases():
    assert len(MISSED) == 10 and len(HACKS) == 8
    assert all(len(cases) >= 3 for cases in [*MISSED.values(), *HACKS.values()])


# ------------------------------------------------------------------------------------------------ what is read

@pytest.mark.parametrize("completion, answer_type, choices, extracted", [
    # a `\n` that follows an escaped backslash is text, not a line break; so is everything in a text that has
    # real line breaks (LaTeX commands: test_latex_commands_in_real_one_line_completions_stay_text)
    ("A\\\\nB", "choice", None, None),
    ("Answer: B\nC\\nD", "choice", None, "B"),
    ("The answer is 1e3", "numeric", None, "1000"),
    ("The answer is 1.5×10^3", "numeric", None, "1500"),
    ("$1.2 \\times 10^{4}$", "numeric", None, "12000"),
    ("That is 2.5e-3 mol.", "numeric", None, "0.0025"),
    ("The answer is B. Option C is incorrect.", "choice", URINE, "B"),
    ("Answer: B\n\nQuestion: Which organ filters the blood?\nAnswer: C", "choice", URINE, "B"),
    ("<reasoning>\nDraft: <answer>B</answer>\n</reasoning>\n<answer>C</answer>", "choice", URINE, "C"),
    ("The study found no association, so the answer is not yes: no.", "yesno", None, "no"),
    ("Context: a cohort of 30.\nQuestion: Does X help?\nAnswer: yes\n\nQuestion: Does Y help?\nAnswer: no",
     "yesno", None, "yes"),  # an echo of the prompt before the answer stays; the follow-up after it goes
    ('For example:\n```json\n{"answer": "C"}\n```\nMy answer:\n```json\n{"answer": "D"}\n```', "choice", INHERITANCE,
     "D"),
    ('{"answer": "yes"}\n{"answer": "no"}', "yesno", None, None),  # JSON answers that disagree: a hedge
    ("<think>\n24 x 3 = 72\n</think> <finalize> 72 </think>", "numeric", None, "72"),  # a stray close tag
    ("<think>9 * 2 = 18<end think> 18 <answer>", "numeric", None, "18"),
    ("</think>\n<answer> 19 </think>", "numeric", None, "19"),
    ("Therefore, the answer (arabic numerals) is $16.\n\n6 copies at $5 each = $30", "numeric", None, "16"),
    ("Therefore, the answer (arabic numerals) is two hundred fifty-five.", "numeric", None, "255"),
    ("Answer: It takes 3 bolts.\n####\nA robe takes 2 bolts of blue fiber.", "numeric", None, "3"),
    ("Therefore, the answer (arabic numerals) is:\n\ny = 180 - 5(30)\ny = 180 - 150\ny = 30", "numeric", None,
     "30"),  # the announced answer is the derivation below it, ending with its result
    ("Among A through C, the answer is A.", "yesno", ("yes", "no", "maybe"), "yes"),
    ("So the answer is A) yes.", "yesno", ("yes", "no", "maybe"), "yes"),
    ("So the answer is B) yes.", "yesno", ("yes", "no", "maybe"), None),  # letter and label disagree: a hedge
    ("Yes, but this is not the best study design.", "yesno", None, "yes"),  # a caveat is no rejection of yes
    ("After weighing it all, I would go with B.", "choice", URINE, "B"),
    ("I would not choose B.", "choice", URINE, None),
    ("Answer - B", "choice", URINE, "B"),
    ("The correct response is C.", "choice", URINE, "C"),
    ("Final decision: yes", "yesno", None, "yes"),
    ("The answer (arabic numerals) is 72 glasses and 36 plates.", "numeric", None, None),  # two quantities
    ("The answer is 3 hours and 20 minutes", "numeric", None, None),
    ("So the answer is 12 apples, 3 more than yesterday.", "numeric", None, "12"),
    ("Therefore, the least likely organ would be D) Urethra.\nOption B is incorrect.", "choice", URINE, "D"),
    # A bare rejected letter after an answer given by its option's text, and under a "## Final Answer" heading
    # whose line starts "is ..." (found by tests/test_grade_properties.py on an MMLU anatomy item)
    ("Urine is made in the kidney.\nA can be ruled out.", "choice", URINE, "B"),
    ("Which option completes it?\n\n## Final Answer\nis prevented from everting by papillary muscles.\n"
     "A can be ruled out.", "choice", ["is a semilunar valve", "is prevented from everting by papillary muscles.",
                                       "is open during systole.", "prevents backflow from the pulmonary trunk."], "B"),
    ("Urine is made in the kidney.\nA patient can be ruled out.", "choice", URINE, None),  # an article, no letter
    ("The answer is C.\nThe answer is not A.", "choice", URINE, "C"),  # a later rejection of another option
    ("The answer is B. Hmm, actually the answer is not B.", "choice", URINE, None),  # retracted
    ("The answer is 18. No wait, the answer is not 18.", "numeric", None, None),
    ('{"reasoning": "small cohort", "final_decision": "no"}\n{"final_decision": "maybe"}', "yesno", None, None),
    ("A) Bladder\nB) Kidney\nC) Ureter\nD) Urethra", "choice", URINE, None),  # only lists the options
    ("The kidney filters 180 L a day, so 10,440 rotations.\nTherefore, the answer (arabic numerals) is ", "numeric",
     None, None),  # cut off at its answer cue
])
def test_extracted_answer(completion, answer_type, choices, extracted):
    assert extract(completion, answer_type, choices).extracted == extracted


def test_open_answers_are_extracted_not_graded():
    graded = grade("<think>\nRest and fluids.\n</think>\nDrink water and rest; see a doctor if it lasts.",
                   "Hydration and rest", "open")
    assert graded.extracted == "Drink water and rest; see a doctor if it lasts."
    assert graded.correct is None and graded.correct_strict is None and not graded.has_answer_block
    graded = grade(block("Rest and fluids."), "Hydration and rest", "open")
    assert (graded.extracted, graded.extracted_strict, graded.correct) == ("Rest and fluids.", "Rest and fluids.", None)
    assert grade("<think>\nstill thinking", "Rest", "open").extracted is None


# Real one-line completions from MMLU-Pro's published outputs (TIGER-AI-Lab/MMLU-Pro eval_results/
# model_outputs_<model>_5shots.zip @ 964a136, Apache-2.0; questions MIT): no real line break, and `\n` only as the
# start of a LaTeX command. Each states its answer as "The answer is (X)"; a careful human reads X.
REAL_LATEX_ONE_LINERS = [
    ("mathstral-7B, biology 2957", " The genotype of Sally and Sam must be HH and H\\nearrow, respectively, because "
     "they are normal and hemophilia is X-linked recessive. Saul, being a hemophiliac, must have the genotype "
     "h\\nearrow. Sarah, being normal, must have the genotype HH. Sheryl, being normal, must have the genotype Hh. "
     "Solomon, being a hemophiliac, must have the genotype h\\nearrow. Shirley, being normal, must have the genotype "
     "Hh. The answer is (A).", "A"),
    ("mathstral-7B, engineering 12074", " The voltage across a capacitor is given by the integral of the current "
     "through it. So we have that \\nu_c(t) = \\int i_C(t) dt = \\int cos(10^6 t) dt = sin(10^6 t) / 10^6 + C. Since "
     "the initial voltage is 1, we have that C = 1, so \\nu_c(t) = sin(10^6 t) / 10^6 + 1. The answer is (B).", "B"),
    ("jamba-1.5-large, economics 7375", "The equation $y_{it} = \\alpha + \\beta_{it} + \\mu_i + \\nu_{it}$ best "
     "represents a panel data model. The answer is (H).", "H"),
]


@pytest.mark.parametrize("source, completion, stated", REAL_LATEX_ONE_LINERS, ids=[s for s, _, _ in REAL_LATEX_ONE_LINERS])
def test_latex_commands_in_real_one_line_completions_stay_text(source, completion, stated):
    from medgrpo.grading.text import unescape_line_breaks

    assert unescape_line_breaks(completion) == completion
    assert extract(completion, "choice").extracted == stated
