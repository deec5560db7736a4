"""The one definition of answer types, option letters and yes/no/maybe labels (data, grading and rewards use it)."""

# numeric: GSM8K-style numbers; yesno: PubMedQA labels; choice: one option letter; open: free text with a
# reference answer, graded by an LLM judge elsewhere (the rules here only extract the final answer text).
ANSWER_TYPES = ("numeric", "yesno", "choice", "open")
RULE_GRADED_TYPES = ("numeric", "yesno", "choice")
LETTERS = "ABCDEFGHIJ"
YESNO_LABELS = ("yes", "no", "maybe")
