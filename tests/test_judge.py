"""The judge client against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/judge_server.py)."""
from __future__ import annotations

import asyncio
import pytest
from omegaconf import OmegaConf

from judge_server import JudgeServer, rule_verdict, serve
from medgrpo.config import CONF_DIR
from medgrpo.errors import ConfigError
from medgrpo.judge import Judge, JudgeFailed, JudgeSettings, VerdictCache, cache_key
from medgrpo.judge.verdict import InvalidVerdict, judge_messages, parse_verdict

KEY = "sk-test-judge-key-0123456789"
QUESTION = "I have had a headache for two days. What should I do?"
GOOD = "I understand this is worrying. Rest and drink water. See a doctor if it gets worse or you have a fever."


def settings(tmp_path, base_url: str, **changes) -> JudgeSettings:
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "judge" / "deepseek.yaml"))
    raw.update(base_url=base_url, cache_path=str(tmp_path / "judge.sqlite"), timeout_s=2.0, retries=3)
    policy = changes.pop("failure_policy", {})
    raw["failure_policy"].update(policy)
    raw.update(changes)
    return JudgeSettings.from_config(raw)


def score(judge: Judge, completions: list[str], question: str = QUESTION) -> list[float | None]:
    async def once():
        try:
            return await judge.score([question] * len(completions), completions,
                                     ["Rest; see a doctor."] * len(completions))
        finally:
            await judge.aclose()
    return asyncio.run(once())


@pytest.fixture
def server():
    with serve(JudgeServer(expected_key=KEY)) as running:
        yield running


def test_scores_follow_the_rubric_and_a_rerun_is_served_from_the_cache(tmp_path, server):
    fake, base_url = server
    judge = Judge(settings(tmp_path, base_url), KEY)
    answers = [GOOD, "Take painkillers.", "头痛两天，请注意休息，如果加重请及时就医。"]
    scores = score(judge, answers)
    expected = [judge.settings.rubric.score(rule_verdict(answer)) for answer in answers]
    assert scores == pytest.approx(expected)
    assert scores[0] > scores[1]  # advice to see a doctor, kind words and length pay
    assert judge.stats.calls == 3 and judge.stats.cache_hits == 0 and judge.stats.failures == 0
    assert judge.stats.prompt_tokens > 0 and judge.stats.completion_tokens > 0
    assert judge.stats.as_dict()["mean_latency_s"] > 0

    again = Judge(settings(tmp_path, base_url), KEY)  # a new job: same cache file, no call
    assert score(again, answers) == scores
    assert again.stats.calls == 0 and again.stats.cache_hits == 3 and fake.requests == 3


def test_a_grpo_group_with_repeated_completions_costs_one_call_each(tmp_path, server):
    fake, base_url = server
    judge = Judge(settings(tmp_path, base_url), KEY)
    scores = score(judge, [GOOD] * 8 + ["Short."] * 8)
    assert len(set(scores[:8])) == 1 and len(set(scores[8:])) == 1
    assert fake.requests == 2 and judge.stats.calls == 2


def test_429_500_and_timeouts_are_retried_with_backoff(tmp_path, server):
    fake, base_url = server
    judge = Judge(settings(tmp_path, base_url, timeout_s=0.3), KEY)
    answers = [f"{GOOD} [[429x2]]", f"{GOOD} [[500x1]]", f"{GOOD} [[timeoutx1]]"]
    scores = score(judge, answers)
    assert all(value is not None for value in scores)
    assert fake.by_status[429] == 2 and fake.by_status[500] == 1
    assert judge.stats.retries == 4 and judge.stats.failures == 0 and judge.stats.calls == 3


@pytest.mark.parametrize("marker", ["[[malformed]]", "[[range]]"])
def test_an_invalid_verdict_is_a_failed_call_and_never_a_zero(tmp_path, server, marker):
    fake, base_url = server
    judge = Judge(settings(tmp_path, base_url, failure_policy={"min_items": 100}), KEY)
    scores = score(judge, [f"{GOOD} {marker}", GOOD])
    assert scores[0] is None and scores[1] is not None
    # asked once more (reask_invalid: 1), both calls failed, nothing cached for it
    assert judge.stats.failures == 2 and judge.stats.retries == 1 and judge.stats.failed_items == 1
    assert len(judge.cache) == 1


def test_a_judge_that_keeps_failing_fails_the_job(tmp_path):
    with serve(JudgeServer(expected_key=KEY, always="500")) as (fake, base_url):
        judge = Judge(settings(tmp_path, base_url, retries=1, failure_policy={"min_items": 4}), KEY)
        assert score(judge, ["a", "b"]) == [None, None]  # below min_items: skipped, not zero
        with pytest.raises(JudgeFailed, match=r"failed on 4 of 4 items .*max_failure_rate.*InternalServerError"):
            score(judge, ["c", "d"])
    assert fake.by_status[500] == 8  # 4 items x (1 try + 1 retry)
    assert judge.stats.retries == 4


def test_the_failure_rate_counts_distinct_judged_items_and_tolerates_a_rate_at_the_limit(tmp_path, server):
    fake, base_url = server
    judge = Judge(settings(tmp_path, base_url, failure_policy={"max_failure_rate": 0.25, "min_items": 4}), KEY)
    # 4 items, 1 without a verdict: 1/4 = 0.25, exactly the limit: tolerated
    first = score(judge, [f"{GOOD} one", f"{GOOD} two", f"{GOOD} three", "Rest. [[malformed]]"])
    assert first[3] is None and None not in first[:3]
    stats = judge.stats
    assert (stats.items, stats.failed_items, stats.cache_hits) == (4, 1, 0)
    assert (stats.calls, stats.failures, stats.retries) == (3 + 2, 2, 1)  # the malformed one asked twice
    # Cache hits are no judged items: 4 rows from the cache (3 distinct), then 2 new items of which 1 fails ->
    # 2 of 6 (0.33) fails the job. (Counting the hits would make it 2 of 10 = 0.2, under the limit.)
    with pytest.raises(JudgeFailed, match=r"failed on 2 of 6 items \(33% > judge.failure_policy.max_failure_rate=25%\)"):
        score(judge, [f"{GOOD} one", f"{GOOD} one", f"{GOOD} two", f"{GOOD} three", f"{GOOD} four",
                      "Sleep. [[malformed]]"])
    assert judge.stats.cache_hits == 4 and fake.requests == 5 + 1 + 2  # cache hits count rows


def test_a_repeated_completion_is_one_judged_item(tmp_path, server):
    """A GRPO group repeats completions: 3 copies of one answer and 1 of another that fails are 2 items, 1 failed
    (0.5), not 4 rows with 1 failed (0.25)."""
    fake, base_url = server
    rows = [GOOD] * 3 + ["Rest. [[malformed]]"]
    tolerant = Judge(settings(tmp_path, base_url, failure_policy={"max_failure_rate": 0.5, "min_items": 2}), KEY)
    scores = score(tolerant, rows)
    assert scores[3] is None and scores[0] == scores[1] == scores[2] is not None
    assert (tolerant.stats.items, tolerant.stats.failed_items) == (2, 1)
    strict = Judge(settings(tmp_path / "other", base_url, failure_policy={"max_failure_rate": 0.4, "min_items": 2}),
                   KEY)
    with pytest.raises(JudgeFailed, match="failed on 1 of 2 items"):
        score(strict, rows)


def test_a_wrong_key_is_not_retried(tmp_path, server):
    fake, base_url = server
    judge = Judge(settings(tmp_path, base_url, failure_policy={"min_items": 100}), "sk-wrong")
    assert score(judge, [GOOD]) == [None]
    assert fake.by_status[401] == 1 and judge.stats.retries == 0
    assert "sk-wrong" not in repr(judge) and "AuthenticationError" in judge.last_error


def test_the_key_comes_from_the_named_environment_variable(tmp_path, monkeypatch):
    judge_settings = settings(tmp_path, "http://127.0.0.1:9/v1", api_key_env="MEDGRPO_TEST_JUDGE_KEY")
    monkeypatch.delenv("MEDGRPO_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable MEDGRPO_TEST_JUDGE_KEY is not set"):
        judge_settings.api_key()
    monkeypatch.setenv("MEDGRPO_TEST_JUDGE_KEY", KEY)
    assert judge_settings.api_key() == KEY


@pytest.mark.parametrize(("change", "key"), [
    ({"base_url": "api.deepseek.com/v1"}, "judge.base_url"),
    ({"concurrency": 0}, "judge.concurrency"),
    ({"retries": -1}, "judge.retries"),
    ({"failure_policy": {"max_failure_rate": 1.5}}, "judge.failure_policy.max_failure_rate"),
    ({"rubric": {"version": "v", "instructions": "x", "criteria": {"safety": {"weight": -1}}}},
     "judge.rubric.criteria.safety.weight"),
    ({"rubric": {"version": "v", "instructions": "x", "criteria": {"rationale": {"weight": 1}}}},
     "judge.rubric.criteria.rationale"),
])
def test_bad_judge_config_names_the_key(tmp_path, change, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        settings(tmp_path, **{"base_url": "http://127.0.0.1:9/v1", **change})


def test_verdicts_are_validated():
    rubric = settings_rubric()
    ok = parse_verdict('```json\n{"safety": 10, "logic": 10, "completeness": 10, "empathy": 10, "rationale": ""}\n```',
                       rubric)
    assert rubric.score(ok) == 1.0
    assert rubric.score({**ok, "safety": 0}) == pytest.approx(0.6)
    for bad in ('{"safety": 7.5, "logic": 1, "completeness": 1, "empathy": 1, "rationale": ""}',
                '{"safety": "7", "logic": 1, "completeness": 1, "empathy": 1, "rationale": ""}',
                '{"safety": -1, "logic": 1, "completeness": 1, "empathy": 1, "rationale": ""}',
                '{"safety": 7, "logic": 1, "completeness": 1, "rationale": ""}', "8/10", ""):
        with pytest.raises(InvalidVerdict):
            parse_verdict(bad, rubric)


def test_the_sdk_request_transform_leaves_the_judge_messages_unchanged():
    """client.py sends the messages in extra_body, past the openai SDK's request transform (it costs CPU): right
    only while that transform sends them as they are. It would not after an SDK change that renames or formats
    a field of a chat message; then this fails and the messages go back to `messages=`."""
    from openai._utils import maybe_transform
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

    messages = judge_messages(settings_rubric(), QUESTION, None, "<think>头痛两天</think> " + GOOD)
    params = {"model": "deepseek-chat", "messages": messages, "temperature": 0.0, "max_tokens": 400}
    assert maybe_transform(params, CompletionCreateParamsNonStreaming) == params


def test_cache_keys_separate_models_rubric_versions_and_inputs(tmp_path):
    keys = {cache_key("m", "v1", "q", "r", "c"), cache_key("m2", "v1", "q", "r", "c"),
            cache_key("m", "v2", "q", "r", "c"), cache_key("m", "v1", "q", "r", "c2"),
            cache_key("m", "v1", "q2", "r", "c"), cache_key("m", "v1", "q", "r2", "c")}
    assert len(keys) == 6
    cache = VerdictCache(tmp_path / "sub" / "judge.sqlite")
    cache.put_many({"k": {"safety": 1}})
    assert cache.get("k") == {"safety": 1} and cache.get("other") is None
    assert cache.get_many(["k", "x", "k"]) == {"k": {"safety": 1}}


def settings_rubric():
    return JudgeSettings.from_config(OmegaConf.load(CONF_DIR / "judge" / "deepseek.yaml")).rubric



@pytest.mark.parametrize("keepalive_s, new_connections", [(30.0, False), (0.2, True)])
def test_idle_connections_live_judge_keepalive_s(tmp_path, server, keepalive_s, new_connections):
    """A GRPO step lasts longer than the SDK's 5 s keep-alive: judge.keepalive_s decides whether the next batch
    reuses the connections (here a 1 s pause between two batches on one event loop, as TRL's reward loop has)."""
    fake, base_url = server
    judge = Judge(settings(tmp_path, base_url, keepalive_s=keepalive_s, concurrency=4), KEY)

    async def two_batches():
        try:
            await judge.score([QUESTION] * 4, [f"{GOOD} first {i}" for i in range(4)], [None] * 4)
            first = set(fake.connections)
            await asyncio.sleep(1.0)
            await judge.score([QUESTION] * 4, [f"{GOOD} second {i}" for i in range(4)], [None] * 4)
            return first, set(fake.connections)
        finally:
            await judge.aclose()

    first, both = asyncio.run(two_batches())
    assert first and (both != first) is new_connections, (first, both)
