"""Data layer: sources from conf/data/sources/*.yaml, the weighted training mix, evaluation sets, guards.

    from medgrpo.data import prepare_train, prepare_eval, validate_data_config, check_leakage
    validate_data_config(cfg.data)                                   # before any model loads
    train, train_report = prepare_train(cfg.data, tokenizer, prompt_format, seed, max_prompt_tokens)
    evals, eval_report = prepare_eval(cfg.data, tokenizer, prompt_format, max_prompt_tokens, limit=None)

Rows: id, source, prompt (system + user chat messages), question, answer, answer_type, choices.
"""
from .leakage import check_leakage, normalize_question
from .prepare import FEATURES, prepare_eval, prepare_train
from .spec import DataPlan, SourceSpec, parse_source, validate_data_config

__all__ = ["FEATURES", "DataPlan", "SourceSpec", "check_leakage", "normalize_question", "parse_source",
           "prepare_eval", "prepare_train", "validate_data_config"]
