"""The open-answer rewards of reward=judge_mix (rules and the LLM judge) and the judge's config checks."""
from __future__ import annotations

import asyncio

import pytest
from omegaconf import OmegaConf

from judge_server import JudgeServer, rule_verdict, serve
from medgrpo import rewards
from medgrpo.config import CONF_DIR, compose_config, validate
from medgrpo.errors import ConfigError
from medgrpo.judge import Judge, JudgeSettings, cache_key
from medgrpo.prompting import PromptFormat

KEY = "sk-test-rewards-key"
THINK = PromptFormat(system="", think_tag="think")
MIX = OmegaConf.load(CONF_DIR / "reward" / "judge_mix.yaml")
PROMPT = [{"role": "system", "content": "Think, then answer."},
          {"role": "user", "content": "I have crushing chest pain and I am sweating. What should I do?"}]
COMPLETIONS = [
    "<think>Chest pain with sweating can be a heart attack.</think>Call 911 now; this could be a heart attack.",
    "<think>Probably muscular.</think>It is nothing.",
    "<think>Never closed, cut off by the length limit",
    "<think>胸痛伴出汗可能是心梗。</think>建议立即拨打120，尽快就医检查。",
    "B",
]
ANSWER_TYPES = ["open", "open", "open", "open", "choice"]
META = [{"language": "en"}, {"language": "en"}, {"language": "en"}, {"language": "zh"}, None]


def rule_rewards() -> dict[str, list]:
    funcs, _ = rewards.build_reward_functions(MIX, THINK)
    return {fn.__name__: fn([PROMPT] * 5, COMPLETIONS, answer_type=ANSWER_TYPES, meta=META)
            for fn in funcs if fn.__name__ != "judge"}


def test_the_seed_rules_score_open_answers_only():
    scores = rule_rewards()
    assert scores["think_block"] == [0.2, 0.2, 0.0, 0.2, None]
    assert scores["advice_keywords"] == [0.1, 0.0, 0.0, 0.1, None]
    assert scores["too_short"] == [0.0, -0.5, -0.5, 0.0, None]  # a truncated thinking gave no answer at all


def test_judge_mix_is_the_seed_formula(tmp_path):
    """Weighted as TRL sums them, the rewards are 0.6 x rules + 0.4 x judge."""
    funcs, weights = rewards.build_reward_functions(MIX, THINK)
    assert dict(zip([fn.__name__ for fn in funcs], weights)) == {
        "think_block": 0.6, "advice_keywords": 0.6, "too_short": 0.6, "judge": 0.4}
    with serve(JudgeServer(expected_key=KEY)) as (_, base_url):
        judge = Judge(judge_settings(tmp_path, base_url), KEY)
        funcs, weights = rewards.build_reward_functions(MIX, THINK, judge)

        async def judged():
            try:
                return await funcs[-1]([PROMPT] * 5, COMPLETIONS, answer=["Call emergency services."] * 5,
                                       answer_type=ANSWER_TYPES)
            finally:
                await judge.aclose()
        scores = asyncio.run(judged())
    assert scores[-1] is None and judge.stats.calls == 4
    expected_judge = [judge.settings.rubric.score(rule_verdict(text)) for text in COMPLETIONS[:4]]
    assert scores[:4] == pytest.approx(expected_judge)
    rules = rule_rewards()
    total = sum(weight * rules[fn.__name__][0] for fn, weight in zip(funcs, weights) if fn.__name__ != "judge")
    assert total + 0.4 * scores[0] == pytest.approx(0.6 * (0.2 + 0.1 + 0.0) + 0.4 * expected_judge[0])


def test_the_judge_reward_sends_the_question_not_the_system_prompt(tmp_path):
    with serve(JudgeServer(expected_key=KEY)) as (_, base_url):
        judge = Judge(judge_settings(tmp_path, base_url), KEY)
        funcs, _ = rewards.build_reward_functions({"weights": {"judge": 1.0}}, THINK, judge)

        async def judged():
            try:
                return await funcs[0]([PROMPT], COMPLETIONS[:1], answer=["ref"], answer_type=["open"])
            finally:
                await judge.aclose()
        asyncio.run(judged())
    assert judge.cache.get(cache_key(judge.settings.model, judge.settings.rubric.version, PROMPT[1]["content"],
                                     "ref", COMPLETIONS[0])) is not None


@pytest.mark.parametrize(("params", "key"), [
    ({"advice_keywords": {"keywords": {"zh": ["建议"]}}}, "reward.params.advice_keywords.keywords"),
    ({"too_short": {"min_chars": {"en": 0}}}, "reward.params.too_short.min_chars"),
    ({"too_short": {"min_chars": {"en": 40}, "penalty": 0.5}}, "reward.params.too_short.penalty"),
    ({"judge": {"client": "x"}}, "reward.params.judge.client"),
])
def test_bad_rule_parameters_name_the_key(params, key):
    weights = {name: 1.0 for name in params}
    with pytest.raises(ConfigError, match=f"'{key}'"):
        rewards.build_reward_functions({"weights": weights, "params": params}, THINK)


def test_a_job_with_the_judge_but_no_key_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    cfg = compose_config("preset=tiny", "data=open_samples", "reward=judge_mix",
                         "objective=eval/redteam/think_coverage", output_dir=tmp_path / "job")
    assert rewards.needs_judge(cfg.reward)
    with pytest.raises(ConfigError, match="environment variable DEEPSEEK_API_KEY is not set"):
        validate(cfg)
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    validate(cfg)
    assert not rewards.needs_judge(compose_config("preset=tiny", output_dir=tmp_path / "other").reward)


def judge_settings(tmp_path, base_url: str) -> JudgeSettings:
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "judge" / "deepseek.yaml"))
    raw.update(base_url=base_url, cache_path=str(tmp_path / "judge.sqlite"))
    return JudgeSettings.from_config(raw)
