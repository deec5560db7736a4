"""Alias of medgrpo.grading, kept so that existing imports and `python -m medgrpo.grade ...` keep working."""
import sys

from medgrpo.grading import (  # noqa: F401  (re-exported)
    Extraction,
    Graded,
    completion_text,
    extract,
    grade,
    grade_jsonl,
    is_valid_answer,
    main,
    options_tuple,
)

__all__ = ["Extraction", "Graded", "completion_text", "extract", "grade", "grade_jsonl", "is_valid_answer", "main",
           "options_tuple"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m medgrpo.grade"))
