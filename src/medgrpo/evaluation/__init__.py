"""Evaluation: generation engines, s1 budget forcing, grading into predictions, and accuracy metrics."""
