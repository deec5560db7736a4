"""Reward functions for TRL's GRPOTrainer, chosen and weighted by the `reward` config group.

    funcs, weights = build_reward_functions(cfg.reward, prompt_format)   # validates; before any model loads
    check_rewards_applicable(cfg.reward, train_set.column_names)        # after data prep, before training
    GRPOConfig(reward_weights=weights, ...); GRPOTrainer(reward_funcs=funcs, ...)

Config schema (conf/reward/*.yaml):
    weights: {<reward>: <weight>, ...}   names registered in REWARDS; weights >= 0, not all 0. A weight of 0 keeps
                                        the reward in TRL's logs (rewards/<name>/mean) without training on it.
    params:  {<reward>: {<param>: <value>}}   optional keyword parameters of the reward functions below.

Every reward is a small pure module-level function, registered with @reward(columns=..., check=...) so that what
it needs stands beside its definition, with TRL's signature
fn(prompts, completions, completion_ids=None, **columns) -> list[float | None]: TRL passes every dataset column
(answer, answer_type, choices, ...) as a keyword list. None means "does not apply to this row" (TRL skips it).
Completions may be strings or chat lists; malformed ones (empty, truncated, huge, lone surrogates) score 0.
Correctness and answer validity come from medgrpo.grade, the grader the evaluation uses.

Open answers (answer_type open, reward=judge_mix): the seed's rules think_block (+0.2), advice_keywords (+0.1,
keyword lists per language) and too_short (-0.5), and `judge`, an LLM judge's rubric score in [0, 1] (async: TRL
awaits it on its event loop, so the judge's calls of a batch run concurrently with nothing blocking). The rules
score only open rows (None elsewhere); the judge gives None to a row it could not score, never 0.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from medgrpo.errors import ConfigError
from medgrpo.evaluation.safety import has_thinking, language_of
from medgrpo.grade import completion_text, extract, grade, is_valid_answer
from medgrpo.prompting import ANSWER_CLOSE, ANSWER_OPEN, PromptFormat

TAG_REWARD = 0.125
FORMAT_REWARD = 0.5
VALID_ANSWER_REWARD = 0.5
TRAILING_TEXT_PENALTY = 0.001  # per character after </answer>, as in the recipe's xml count


@dataclass(frozen=True)
class RegisteredReward:
    """A reward function and what it needs: the dataset columns it reads (check_rewards_applicable refuses a
    training set without them) and a check of its reward.params values (fail(param, problem) raises)."""

    fn: Callable[..., list[float | None]]
    columns: tuple[str, ...] = ()
    check: Callable[[dict, Callable[[str, str], None]], None] | None = None


# name -> reward, filled by @reward below; other modules register their rewards the same way.
REWARDS: dict[str, RegisteredReward] = {}


def reward(columns: tuple[str, ...] = (), check: Callable | None = None):
    """Register a reward function under its __name__, with the columns it needs and its parameter check."""
    def register(fn):
        if fn.__name__ in REWARDS:
            raise ValueError(f"reward {fn.__name__!r} is registered twice")
        REWARDS[fn.__name__] = RegisteredReward(fn, tuple(columns), check)
        return fn
    return register


def _number(params: dict, param: str, default: float, fail) -> float:
    value = params.get(param, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        fail(param, f"expected a number, got {value!r}")
    return value


def _check_correctness(params: dict, fail) -> None:
    full, partial = _number(params, "full_credit", 2.0, fail), _number(params, "partial_credit", 1.0, fail)
    if not 0 <= partial <= full:
        fail("partial_credit", f"expected 0 <= partial_credit <= full_credit ({full}), got {partial}")


def _check_overlong(params: dict, fail) -> None:
    length = params.get("max_completion_length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        fail("max_completion_length", f"required: a positive integer equal to grpo.max_completion_length, "
                                      f"got {length!r}")
    fraction = _number(params, "buffer_fraction", 0.25, fail)
    if not 0 < fraction <= 1 or fraction * length < 1:
        fail("buffer_fraction", f"expected a fraction in (0, 1] leaving a buffer of at least one token, "
                                f"got {fraction} of {length}")
    if _number(params, "penalty", 1.0, fail) < 0:
        fail("penalty", "expected a number >= 0 (the reward at the limit is -penalty)")


def _check_repetition(params: dict, fail) -> None:
    size = params.get("ngram_size", 3)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        fail("ngram_size", f"expected a positive integer, got {size!r}")
    if _number(params, "max_penalty", -1.0, fail) > 0:
        fail("max_penalty", "expected a number <= 0 (a penalty)")


@reward()
def xml_count(prompts, completions, completion_ids=None, *, think_tag: str = "reasoning", **columns) -> list[float]:
    """0.125 for each of the four tags written once on its own line (the recipe's shaping reward), minus
    0.001 per character after </answer>; never below 0. A completion cut off inside a tag scores 0."""
    fmt = PromptFormat(system="", think_tag=think_tag)
    tags = (f"{fmt.think_open}\n", f"\n{fmt.think_close}\n", f"\n{ANSWER_OPEN}\n", f"\n{ANSWER_CLOSE}")
    rewards = []
    for text in _texts(completions):
        if _ends_inside_a_tag(text, (fmt.think_open, fmt.think_close, ANSWER_OPEN, ANSWER_CLOSE)):
            rewards.append(0.0)
            continue
        score = TAG_REWARD * sum(text.count(tag) == 1 for tag in tags)
        close_at = text.rfind(ANSWER_CLOSE)
        if close_at >= 0:
            score -= TRAILING_TEXT_PENALTY * len(text[close_at + len(ANSWER_CLOSE):].strip())
        rewards.append(max(0.0, score))
    return rewards


@reward()
def soft_format(prompts, completions, completion_ids=None, *, think_tag: str = "reasoning", **columns) -> list[float]:
    """0.5 when the completion opens with one reasoning block followed by one answer block (text may follow)."""
    return [FORMAT_REWARD if _layout_ok(text, think_tag, strict=False) else 0.0 for text in _texts(completions)]


@reward()
def strict_format(prompts, completions, completion_ids=None, *, think_tag: str = "reasoning", **columns
                  ) -> list[float]:
    """0.5 for exactly "<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>": each tag once, both blocks
    non-empty, nothing after the answer."""
    return [FORMAT_REWARD if _layout_ok(text, think_tag, strict=True) else 0.0 for text in _texts(completions)]


@reward(columns=("answer_type",))
def valid_answer(prompts, completions, completion_ids=None, *, answer_type=None, choices=None, **columns
                 ) -> list[float | None]:
    """0.5 when the answer block holds a possible label for the item: a number, yes/no/maybe, one of its option
    letters. (The recipe's "is an integer" reward, which any text containing "a" passed for multiple choice.)"""
    rows = []
    for text, kind, options in zip(_texts(completions), *_columns(len(completions), answer_type, choices)):
        if not kind:
            rows.append(None)
            continue
        found = extract(text, kind, options or None)
        rows.append(VALID_ANSWER_REWARD if is_valid_answer(found.extracted_strict, kind, options or None) else 0.0)
    return rows


@reward(columns=("answer", "answer_type"), check=_check_correctness)
def correctness(prompts, completions, completion_ids=None, *, answer=None, answer_type=None, choices=None,
                full_credit: float = 2.0, partial_credit: float = 1.0, **columns) -> list[float | None]:
    """full_credit for the right answer in the answer block (grade's correct_strict); partial_credit for the
    right answer given outside the required format (lenient only); 0 for wrong, missing or hedged answers."""
    rows = []
    for text, gold, kind, options in zip(_texts(completions),
                                         *_columns(len(completions), answer, answer_type, choices)):
        if gold is None or gold == "" or not kind:
            rows.append(None)
            continue
        graded = grade(text, gold, kind, options or None)
        rows.append(full_credit if graded.correct_strict else partial_credit if graded.correct else 0.0)
    return rows


@reward(check=_check_overlong)
def overlong(prompts, completions, completion_ids=None, *, max_completion_length: int,
             buffer_fraction: float = 0.25, penalty: float = 1.0, **columns) -> list[float]:
    """DAPO's soft overlong punishment: 0 up to max_completion_length - buffer tokens, then falling linearly to
    -penalty at max_completion_length (where generation is cut off), buffer = buffer_fraction * max."""
    if completion_ids is None:
        raise TypeError("overlong needs completion_ids (token ids per completion), which GRPOTrainer passes")
    buffer = buffer_fraction * max_completion_length
    safe_length = max_completion_length - buffer
    rewards = []
    for ids in completion_ids:
        excess = len(ids) - safe_length
        rewards.append(0.0 if excess <= 0 else -penalty * min(1.0, excess / buffer))
    return rewards


@reward(check=_check_repetition)
def repetition(prompts, completions, completion_ids=None, *, ngram_size: int = 3, max_penalty: float = -1.0,
               **columns) -> list[float]:
    """open-r1's n-gram repetition penalty: max_penalty * (1 - distinct n-grams / all n-grams) over lower-cased
    words; 0 for texts shorter than one n-gram."""
    rewards = []
    for text in _texts(completions):
        words = text.lower().split()
        total = len(words) - ngram_size + 1
        if total <= 0:
            rewards.append(0.0)
            continue
        distinct = len(set(zip(*(words[offset:] for offset in range(ngram_size)))))
        rewards.append(max_penalty * (total - distinct) / total if distinct < total else 0.0)
    return rewards


def _check_keywords(params: dict, fail) -> None:
    keywords = params.get("keywords")
    if not isinstance(keywords, dict) or not keywords or not all(
            isinstance(words, list) and words and all(isinstance(w, str) and w.strip() for w in words)
            for words in keywords.values()):
        fail("keywords", f"expected a mapping language -> non-empty list of keywords, e.g. {{en: [see a doctor]}}, "
                         f"got {keywords!r}")
    if "en" not in keywords:
        fail("keywords", "needs an `en` list: it is used for text in languages without their own list")
    if _number(params, "bonus", 0.1, fail) < 0:
        fail("bonus", "expected a number >= 0")


def _check_too_short(params: dict, fail) -> None:
    limits = params.get("min_chars")
    if not isinstance(limits, dict) or "en" not in limits or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in limits.values()):
        fail("min_chars", f"expected a mapping language -> positive integer with an `en` entry, got {limits!r}")
    if _number(params, "penalty", -0.5, fail) > 0:
        fail("penalty", "expected a number <= 0 (a penalty)")


@reward(columns=("answer_type",))
def think_block(prompts, completions, completion_ids=None, *, answer_type=None, think_tag: str = "think",
                bonus: float = 0.2, **columns) -> list[float | None]:
    """bonus for a complete, non-empty thinking block (the seed's +0.2 for <think>); open answers only."""
    fmt = PromptFormat(system="", think_tag=think_tag)
    return [None if kind != "open" else bonus if has_thinking(text, fmt.think_open, fmt.think_close) else 0.0
            for text, kind in zip(_texts(completions), *_columns(len(completions), answer_type))]


@reward(columns=("answer_type",), check=_check_keywords)
def advice_keywords(prompts, completions, completion_ids=None, *, answer_type=None, meta=None,
                    keywords: dict[str, list[str]], bonus: float = 0.1, **columns) -> list[float | None]:
    """bonus when the answer (not the thinking) gives advice or a diagnosis: one of its language's keywords
    (case-insensitive; language from the item's meta, else guessed from the text); open answers only."""
    lowered = {language: [word.lower() for word in words] for language, words in keywords.items()}
    rows = []
    for text, kind, item in zip(_texts(completions), *_columns(len(completions), answer_type, meta)):
        if kind != "open":
            rows.append(None)
            continue
        answer = (extract(text, "open").extracted or "").lower()
        words = lowered.get(language_of(answer, (item or {}).get("language")), lowered["en"])
        rows.append(bonus if any(word in answer for word in words) else 0.0)
    return rows


@reward(columns=("answer_type",), check=_check_too_short)
def too_short(prompts, completions, completion_ids=None, *, answer_type=None, meta=None,
              min_chars: dict[str, int], penalty: float = -0.5, **columns) -> list[float | None]:
    """penalty when the answer (not the thinking; none at all when the thinking never closed) is shorter than its
    language's min_chars; open answers only."""
    rows = []
    for text, kind, item in zip(_texts(completions), *_columns(len(completions), answer_type, meta)):
        if kind != "open":
            rows.append(None)
            continue
        answer = (extract(text, "open").extracted or "").strip()
        limit = min_chars.get(language_of(answer, (item or {}).get("language")), min_chars["en"])
        rows.append(penalty if len(answer) < limit else 0.0)
    return rows


@reward(columns=("answer", "answer_type"))
async def judge(prompts, completions, completion_ids=None, *, answer=None, answer_type=None, client,
                **columns) -> list[float | None]:
    """The LLM judge's rubric score in [0, 1] (medgrpo.judge; weights and rubric in conf/judge/), given the
    question, the reference answer and the whole completion; None where it gave no verdict; open answers only."""
    count = len(completions)
    rows = [index for index, kind in enumerate(*_columns(count, answer_type)) if kind == "open"]
    references = _columns(count, answer)[0]
    scores = await client.score([_question(prompts[i]) for i in rows],
                                [completion_text(completions[i]) for i in rows], [references[i] for i in rows])
    found = dict(zip(rows, scores))
    return [found.get(index) for index in range(count)]


def needs_judge(reward_cfg) -> bool:
    """Whether a configured reward calls the LLM judge (then the job needs the `judge` group and its API key)."""
    names = _plain(reward_cfg).get("weights") or {}
    return any(name in REWARDS and "client" in inspect.signature(REWARDS[name].fn).parameters for name in names)


# Keyword parameters that TRL fills from dataset columns.
_COLUMN_PARAMS = ("answer", "answer_type", "choices", "meta")
# Set by the job, not from reward.params: the format rewards must check the tags the prompt asks for, and the
# judge reward calls the client built from the `judge` group.
_FROM_JOB = {"think_tag": "comes from the prompt format: set prompt.think_tag",
             "client": "is the LLM judge built from the `judge` config group: set judge.<key>"}


def build_reward_functions(reward_cfg, prompt_format: PromptFormat, judge=None) -> tuple[list[Callable], list[float]]:
    """The configured reward functions (each with its registry name as __name__) and their weights. judge: the
    medgrpo.judge.Judge that the `judge` reward calls (None only to validate the config).

    Raises ConfigError naming reward.weights.<name> / reward.params.<name>.<param> for anything invalid.
    """
    cfg = _plain(reward_cfg)
    unknown = sorted(set(cfg) - {"weights", "params"})
    if unknown:
        raise ConfigError(f"reward.{unknown[0]}", "unknown key; a reward config has `weights` and `params`")
    weights = _checked_weights(cfg.get("weights"))
    params = cfg.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError("reward.params", f"expected a mapping reward name -> parameters, got {params!r}")
    for name, values in params.items():
        if name not in REWARDS:
            raise ConfigError(f"reward.params.{name}", f"unknown reward; known rewards: {', '.join(REWARDS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"reward.params.{name}", f"expected a mapping parameter -> value, got {values!r}")
    funcs = [_bind(name, params.get(name) or {}, prompt_format, judge) for name in weights]
    return funcs, list(weights.values())


def check_rewards_applicable(reward_cfg, dataset_columns: Iterable[str]) -> None:
    """Refuse rewards that cannot be computed on the prepared training set (e.g. correctness without answers)."""
    columns = set(dataset_columns)
    for name in _plain(reward_cfg).get("weights") or {}:
        missing = [column for column in REWARDS[name].columns if column not in columns]
        if missing:
            raise ConfigError(f"reward.weights.{name}",
                              f"needs dataset column(s) {missing}, but the training data has {sorted(columns)}; "
                              f"train on data with gold answers or remove {name} from reward.weights")


def _checked_weights(weights) -> dict[str, float]:
    if not isinstance(weights, dict) or not weights:
        raise ConfigError("reward.weights", f"expected a mapping reward name -> weight, e.g. {{correctness: 1.0}}; "
                                            f"known rewards: {', '.join(REWARDS)}")
    for name, weight in weights.items():
        key = f"reward.weights.{name}"
        if name not in REWARDS:
            raise ConfigError(key, f"unknown reward; known rewards: {', '.join(REWARDS)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(key, f"expected a finite number, got {weight!r}")
        if weight < 0:
            raise ConfigError(key, f"{weight} is negative: penalties (overlong, repetition) are negative rewards "
                                   "already; use weight 0 to only log a reward")
    if all(weight == 0 for weight in weights.values()):
        raise ConfigError("reward.weights", "all weights are 0: GRPO would have no reward to learn from")
    return {name: float(weight) for name, weight in weights.items()}


def _bind(name: str, params: dict, prompt_format: PromptFormat, judge=None) -> Callable:
    """The reward function with its parameters fixed; a partial that keeps the function's name for TRL's logs."""
    fn = REWARDS[name].fn
    accepted = [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.name not in _COLUMN_PARAMS]
    for param in params:
        if param in _FROM_JOB:
            raise ConfigError(f"reward.params.{name}.{param}", _FROM_JOB[param])
        if param not in accepted:
            takes = [p for p in accepted if p not in _FROM_JOB]
            raise ConfigError(f"reward.params.{name}.{param}",
                              f"unknown parameter; {name} takes {takes or 'no parameters'}")
    if REWARDS[name].check is not None:
        REWARDS[name].check(params, lambda param, problem: _fail(f"reward.params.{name}.{param}", problem))
    bound = dict(params)
    if "think_tag" in accepted:
        bound["think_tag"] = prompt_format.think_tag
    if "client" in accepted and judge is not None:
        bound["client"] = judge
    return functools.update_wrapper(functools.partial(fn, **bound), fn)


def _fail(key: str, problem: str):
    raise ConfigError(key, problem)


def _plain(reward_cfg) -> dict:
    """A plain dict from a DictConfig (interpolations such as ${grpo.max_completion_length} resolved) or a dict."""
    if isinstance(reward_cfg, dict):
        return reward_cfg
    from omegaconf import DictConfig, OmegaConf

    if isinstance(reward_cfg, DictConfig):
        try:
            return OmegaConf.to_container(reward_cfg, resolve=True)
        except Exception as error:  # an interpolation that does not resolve names its own key
            raise ConfigError("reward", f"cannot resolve the reward config: {error}") from error
    raise ConfigError("reward", f"expected a mapping with `weights`, got {type(reward_cfg).__name__}")


def _ends_inside_a_tag(text: str, tags: tuple[str, ...]) -> bool:
    """Whether the text stops in the middle of one of the tags ("...</reas"): a truncated completion."""
    return any(text.endswith(tag[:cut]) for tag in tags for cut in range(2, len(tag)))


def _layout_ok(text: str, think_tag: str, strict: bool) -> bool:
    """Reasoning block, then (after whitespace only) the answer block, each tag exactly once.

    strict adds the recipe's line layout: each tag on its own line, non-empty blocks, nothing after </answer>.
    str.find/count only: linear on any input.
    """
    fmt = PromptFormat(system="", think_tag=think_tag)
    text = text.strip()
    tags = (fmt.think_open, fmt.think_close, ANSWER_OPEN, ANSWER_CLOSE)
    if not text.startswith(fmt.think_open) or any(text.count(tag) != 1 for tag in tags):
        return False
    think_end, answer_start, answer_end = text.find(fmt.think_close), text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    between = text[think_end + len(fmt.think_close):answer_start]
    if not think_end < answer_start < answer_end or between.strip():
        return False
    if not strict:
        return True
    reasoning = text[len(fmt.think_open):think_end]
    answer = text[answer_start + len(ANSWER_OPEN):answer_end]
    return (text.endswith(ANSWER_CLOSE) and "\n" in between
            and all(block.startswith("\n") and block.endswith("\n") and block.strip() for block in (reasoning, answer)))


def _texts(completions) -> list[str]:
    return [completion_text(completion) for completion in completions]


def _question(prompt) -> str:
    """What the user asked: the last user message of a chat prompt (the system prompt is not the question)."""
    if isinstance(prompt, str):
        return prompt
    return next((message["content"] for message in reversed(prompt) if message.get("role") == "user"),
                completion_text(prompt))


def _columns(count: int, *columns) -> list[list]:
    """Dataset columns as lists of the batch's length; a column the dataset lacks reads as None per row."""
    return [list(column) if column is not None else [None] * count for column in columns]
