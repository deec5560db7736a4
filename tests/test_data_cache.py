"""The prepared-data cache is invalidated by what determines the data: a source file's content and the tokenizer
(its vocabulary and chat template). Checked through prepare_eval's report (cache: hit/miss) and its rows."""
from __future__ import annotations

import copy
import json
import shutil

import pytest

from medgrpo.config import compose_config
from medgrpo.data import prepare_eval
from medgrpo.prompting import PromptFormat
from tests._run import ROOT


@pytest.fixture
def setup(tmp_path):
    source = tmp_path / "gsm8k_test.jsonl"
    shutil.copy(ROOT / "data" / "samples" / "gsm8k" / "test.jsonl", source)
    cfg = compose_config("preset=tiny", "data.eval=[gsm8k]", f"data.sources.gsm8k.local.path={source}",
                         f"data.cache_dir={tmp_path / 'cache'}", output_dir=tmp_path / "job")
    return cfg, source


def prepare(cfg, tokenizer):
    evals, report = prepare_eval(cfg.data, tokenizer, PromptFormat.from_config(cfg.prompt), max_prompt_tokens=None,
                                 limit=3)
    return evals["gsm8k"], report["cache"]


def test_a_second_preparation_is_a_hit_with_the_same_rows(setup, tiny_tokenizer):
    cfg, _ = setup
    first, status = prepare(cfg, tiny_tokenizer)
    assert status == "miss"
    again, status = prepare(cfg, tiny_tokenizer)
    assert status == "hit" and again.to_list() == first.to_list()


def test_editing_a_source_file_invalidates_the_cache(setup, tiny_tokenizer):
    cfg, source = setup
    prepare(cfg, tiny_tokenizer)
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    rows = [{**row, "question": "EDITED " + row["question"]} for row in rows]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    edited, status = prepare(cfg, tiny_tokenizer)
    assert status == "miss"
    assert all(row["question"].startswith("EDITED ") for row in edited)


def test_another_chat_template_or_vocabulary_invalidates_the_cache(setup, tiny_tokenizer):
    cfg, _ = setup
    original, _ = prepare(cfg, tiny_tokenizer)
    templated = copy.deepcopy(tiny_tokenizer)
    templated.chat_template = "SYSTEM-FREE " + templated.chat_template
    _, status = prepare(cfg, templated)
    assert status == "miss"
    grown = copy.deepcopy(tiny_tokenizer)
    grown.add_tokens(["<planted_token>"])
    _, status = prepare(cfg, grown)
    assert status == "miss"
    again, status = prepare(cfg, tiny_tokenizer)  # the original entry is still there and still valid
    assert status == "hit" and again.to_list() == original.to_list()
