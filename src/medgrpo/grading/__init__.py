"""The grader: finds a completion's final answer as a careful human grader would, and compares it with the gold.
One grader behind the rewards, the evaluation and the CLI.

    from medgrpo.grading import grade
    graded = grade(completion, "18", "numeric")   # answer types: numeric, yesno, choice, open
    graded.correct_strict   # format-gated: the single <answer> block holds the right answer
    graded.correct          # lenient: the final answer found as a careful human grader would

    python -m medgrpo.grading --answer-type choice predictions.jsonl > graded.jsonl   ("-" reads stdin)
    (python -m medgrpo.grade ... is the same command.)

Where the final answer is (every answer type)
- The text is NFKC-normalised first: full-width letters, digits and colons ("Ｂ", "Answer：B") read as plain ones.
- A completion stored with its line breaks escaped (no real line break; "\\n" as the two characters) reads as
  the text it stands for: "B\\n\\n" is B, and "A\\nB\\nC" is the hedge it is with real line breaks. A "\\n" that
  starts a LaTeX command ("\\nu", "\\neq", "\\nearrow") or follows a backslash stays text.
- Reasoning (<reasoning>/<think> ... close tag, also "</thinking>", "<end think>"; a close tag before any
  opening tag ends reasoning that began in the prompt; a later stray close tag is ignored) is working, not an
  answer. A reasoning block that never closes (a truncated completion) gives no answer. An <answer> block inside
  the reasoning is a draft: it earns nothing, strict or lenient.
- Follow-up material never pays: a new turn or exercise the model invents ("Question 2: ... Answer: C",
  "### Human:", "<|im_start|>") or the completion's first line written again as a line (the model starts
  over) cuts the text there, provided an answer (or a hedge) comes before it. So an echo of the prompt before
  the answer ("Context: ... Question: ... Answer: B") stays.
- strict: exactly one closed <answer>...</answer> outside the reasoning (and no other closing answer tag there);
  its content is read by the answer type's reader. Nothing outside the block counts.
- lenient, with answer blocks: every block must give the same answer (blocks that disagree, an empty block, or
  a block cut off inside a tag: no answer). An unclosed block ends at the next tag ("<answer> 19 </think>");
  an empty unclosed block at the very end is no block.
- lenient, without answer blocks: the text after the reasoning. JSON "answer" values ({"answer": "C"}, also in
  a ```json fence; not an object introduced as an example) must all agree, like answer blocks. Otherwise the
  LAST answer statement counts ("the answer is X", "the answer (arabic numerals) is X", "Final answer: X",
  "Answer: X", "Answer - X", "Final decision: X", "the correct option / choice / response is X", a heading
  alone on its line ("## Final Answer" then X), "#### X", "\\boxed{X}"); a self-correction later in the text
  wins. An announcement that ends its line is answered by the lines below it, up to a blank line. Without a
  statement: the answer type's fallback (below).
- An announced answer is read by its first sentence, then as a whole, then as the one answer it asserts.
  An announced answer that only rejects ("the answer is not A") gives way to the statement before it, unless
  it rejects that statement's answer (a retraction: no answer); with none before it, no fallback runs.
- Never credit for hedging: two different labels, letters or numbers offered as the answer give no answer.
- Never credit for negation or rejection: a mention negated in its clause ("not yes", "isn't 18", "rather than
  C", "rule out B", "neither A nor B", "not C. Spleen") or called wrong right after it ("C is incorrect",
  "Options A and D are wrong", "B can be ruled out", "260 dollars is incorrect") is not an answer, and is no
  hedge either: "C, not D" is C.

Per answer type
- numeric (GSM8K): a number in any common notation ($1,234.50, 18 dollars, 25%, -3, 3/4, \\frac{3}{4}, 18.00),
  compared as an exact value; scientific notation and powers are their value (1e3 = 1000, 1.5×10^3 =
  1.5 \\times 10^{3} = 1500, 10³ = 1000, 2^10 = 1024), never their mantissa. In an answer, "9 * 2 = 18" is the
  result after the last "="; several numbers: the one the answer opens with. An announced answer may spell its
  number ("the answer is two hundred fifty-five"); an answer block must hold digits. Fallback: the last number
  of the text (when rejected, the one before it in the same sentence: "18, not 19"). "18 or 19", "17-19" are
  hedges, and two quantities where one number is asked ("72 glasses and 36 plates") are no single answer.
- yesno (PubMedQA): a label word (yes, no, maybe) standing as an answer: whole words only ("know", "Nobody",
  "yesterday" are not labels), and "no" followed by a noun is a determiner, not the label ("There is no doubt",
  "no significant difference"). When the item shows the labels as options (choices A: yes, B: no, C: maybe),
  an option letter answers with its label, and a letter and a label word that disagree are a hedge. Fallback:
  a label opening the text ("No. The cohort was too small ..."), else the label the conclusion asserts (the
  last sentence, reading back over sentences that only reject a label); an opening and a conclusion that
  differ are a hedge.
- choice (multiple choice): one option letter ("B", "(B)", "B.", "**D) text**", "\\boxed{\\text{A}}", "Option
  B", "OPTION B IS CORRECT", "I would go with B", "D, X-linked dominant") or, when the options are known, the
  text of exactly one option (case, hyphens and punctuation aside), also followed by an explanation
  ("Autosomal recessive, because ..."). A letter whose text names another option ("A. <text of C>") is a hedge.
  Bare capital letters count only in an announced answer, and not as an article or pronoun ("A patient", "I
  think"). An option is also rejected later in its sentence ("Option C, ..., but it is not the best test").
  Fallback: an answer opening the text ("B. Autosomal recessive, because ...") unless the text lists the
  options line by line; else the option the conclusion asserts (letter mentions, else option texts; an option
  text alone does not overrule an opening letter; a text that ends by listing the options chose none); else the
  option named right after a superlative ("the best initial test would be a head MRI").
- open (free text with a reference answer): the final answer text (the answer block, else all text after the
  reasoning, stripped). correct and correct_strict are None: an LLM judge grades open answers elsewhere.

Malformed input (empty, truncated, megabytes long, lone surrogates, not a string) is graded as no answer, never
an exception; an invalid gold answer or answer type raises DataError (a data problem, not a model problem).
Grading does not depend on set or dict iteration order (PYTHONHASHSEED): every choice among answers is ordered.

Readers (numeric, yesno, choice, open_text) share one interface:
  normalise_gold(answer, options) -> canonical gold string (DataError if invalid)
  parse(text, options)    -> the answer a text gives when it is meant to be the answer (a block, a statement)
  scan(text, options, announced=False) -> the one answer a text asserts (bare letters too when announced)
  fallback(text, options) -> the final answer of free text without an answer statement
  is_valid(extracted, options) -> whether an extracted answer is a possible label for the item
parse/scan/fallback return a canonical string, None (no answer found) or text.AMBIGUOUS (several answers offered).
"""
from medgrpo.grading.labels import ANSWER_TYPES, LETTERS, RULE_GRADED_TYPES, YESNO_LABELS
from medgrpo.grading.core import (  # noqa: I001  (labels first: core checks its readers against them)
    READERS,
    Extraction,
    Graded,
    completion_text,
    extract,
    grade,
    is_valid_answer,
    options_tuple,
)
from medgrpo.grading.cli import grade_jsonl, main

__all__ = ["ANSWER_TYPES", "LETTERS", "READERS", "RULE_GRADED_TYPES", "YESNO_LABELS", "Extraction", "Graded",
           "completion_text", "extract", "grade", "grade_jsonl", "is_valid_answer", "main", "options_tuple"]
