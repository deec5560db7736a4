"""Prompts and the prompt-length filter.

    prompts = render_prompts(columns, spec, prompt_format)       # chat lists: system + user
    lengths = prompt_token_lengths(tokenizer, prompts)           # tokens incl. the chat template
    kept, prompts, report = prompts_within_budget(columns, order, spec, prompt_format, tokenizer, 1024)
    check_losses(report, source, warn_fraction=0.2, max_fraction=0.5)

TRL no longer truncates prompts, so a prompt longer than the budget would either crash generation or silently
crowd out the completion: such items are dropped here, per source, and the losses reported. A source losing
more than warn_drop_fraction is logged as a warning; more than max_drop_fraction raises DataError (a mix that
silently lost most of a dataset is not the experiment the config describes).
"""
from __future__ import annotations

import logging

from medgrpo.errors import DataError
from medgrpo.prompting import PromptFormat

from .options import LETTERS
from .spec import SourceSpec

log = logging.getLogger(__name__)
BATCH = 2048


def format_options(choices: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(choices))


def render_user(template: str, question: str, context: str, choices: list[str]) -> str:
    return template.format(question=question, context=context, options=format_options(choices))


def render_prompts(columns: dict[str, list], spec: SourceSpec, prompt_format: PromptFormat) -> list[list[dict]]:
    system = {"role": "system", "content": prompt_format.system}
    return [
        [system, {"role": "user", "content": render_user(spec.template, q, c, ch)}]
        for q, c, ch in zip(columns["question"], columns["context"], columns["choices"])
    ]


def prompt_token_lengths(tokenizer, prompts: list[list[dict]]) -> list[int]:
    """Token count of each prompt as the trainer will see it: the chat template with the generation prompt.

    Same ids as tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True) (which renders the
    template and encodes without adding special tokens); rendering and encoding in batches is much faster.
    """
    lengths: list[int] = []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    for start in range(0, len(prompts), BATCH):
        texts = tokenizer.apply_chat_template(prompts[start:start + BATCH], add_generation_prompt=True, tokenize=False)
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            # what tokenizer(texts, add_special_tokens=False) calls, minus the offsets nobody needs here
            lengths.extend(len(e.ids) for e in backend.encode_batch_fast(texts, add_special_tokens=False))
        else:
            lengths.extend(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return lengths


def prompts_within_budget(columns: dict[str, list], order: list[int], spec: SourceSpec, prompt_format: PromptFormat,
                          tokenizer, max_prompt_tokens: int | None, needed: int | None = None
                          ) -> tuple[list[int], list[list[dict]], dict]:
    """Walk `order` in chunks: render, count tokens, keep prompts within max_prompt_tokens; stop once `needed`
    are kept (None: check all). Returns (kept row indices, their prompts, report)."""
    kept: list[int] = []
    kept_prompts: list[list[dict]] = []
    checked = longest = 0
    for start in range(0, len(order), BATCH):
        chunk = order[start:start + BATCH]
        prompts = render_prompts(_take(columns, chunk), spec, prompt_format)
        lengths = prompt_token_lengths(tokenizer, prompts) if max_prompt_tokens is not None else [0] * len(chunk)
        for i, prompt, n in zip(chunk, prompts, lengths):
            if max_prompt_tokens is None or n <= max_prompt_tokens:
                kept.append(i)
                kept_prompts.append(prompt)
        checked += len(chunk)
        longest = max(longest, max(lengths, default=0))
        if needed is not None and len(kept) >= needed:
            break
    dropped = checked - len(kept)
    report = {"checked": checked, "kept": len(kept), "dropped": dropped,
              "dropped_fraction": round(dropped / checked, 4) if checked else 0.0,
              "not_checked": len(order) - checked, "max_prompt_tokens": max_prompt_tokens,
              "longest_prompt_tokens": longest if max_prompt_tokens is not None else None}
    return kept, kept_prompts, report


def _take(columns: dict[str, list], indices: list[int]) -> dict[str, list]:
    return {k: [v[i] for i in indices] for k, v in columns.items()}


def check_losses(report: dict, source: str, warn_fraction: float, max_fraction: float) -> None:
    """Warn when a source lost more than warn_fraction of the checked items; DataError above max_fraction.
    (When only part of a shuffled pool was checked, that part is a random sample of it.)"""
    fraction, dropped, checked = report["dropped_fraction"], report["dropped"], report["checked"]
    limit = report["max_prompt_tokens"]
    if fraction > max_fraction:
        raise DataError(
            f"source '{source}': the prompt-length filter drops {dropped} of {checked} items ({fraction:.0%}) "
            f"longer than {limit} tokens; the limit is data.length_filter.max_drop_fraction={max_fraction}. "
            "Raise the prompt budget, filter the source (filters.max_context_chars) or raise the limit.")
    if fraction > warn_fraction:
        log.warning("source '%s': the prompt-length filter drops %d of %d items (%.0f%%) longer than %s tokens",
                    source, dropped, checked, 100 * fraction, limit)
    elif dropped:
        log.info("source '%s': the prompt-length filter drops %d of %d items", source, dropped, checked)
