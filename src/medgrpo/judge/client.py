"""Score a whole GRPO batch with an LLM judge: cache first, then bounded-concurrency async calls.

    judge = Judge(JudgeSettings.from_config(cfg.judge), api_key)
    scores = await judge.score(questions, completions, references)   # floats in [0, 1]; None = no verdict
    judge.stats.as_dict()   # the results.json `judge` block

Transport retries (429, 5xx, timeouts, connection errors) are the openai client's own: exponential backoff from
0.5 s to 8 s with jitter, honouring Retry-After. A malformed or out-of-range verdict is a failed call and is
asked again up to `reask_invalid` times. An item left without a verdict scores None (the reward is skipped for
that row), never 0, and the failure policy ends the job once too many items failed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass

import openai
from openai import DEFAULT_CONNECTION_LIMITS, AsyncOpenAI, DefaultAioHttpClient

from medgrpo.judge.cache import VerdictCache, cache_key
from medgrpo.judge.settings import JudgeSettings
from medgrpo.judge.verdict import InvalidVerdict, judge_messages, parse_verdict

log = logging.getLogger(__name__)
# Errors the openai client retries itself; when one is raised, all its retries were spent.
_RETRIED_ERRORS = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                   openai.InternalServerError)


class JudgeFailed(RuntimeError):
    """The judge kept failing: the job stops rather than train on missing (or zeroed) rewards."""


@dataclass
class JudgeStats:
    calls: int = 0                # chat-completion requests made (each with its transport retries)
    cache_hits: int = 0           # items answered from the cache
    failures: int = 0             # calls that ended without a valid verdict
    retries: int = 0              # transport retries + re-asks after an invalid verdict
    items: int = 0                # items that needed a call (cache misses, duplicates counted once)
    failed_items: int = 0         # items left without a verdict
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_total_s: float = 0.0

    def as_dict(self) -> dict:
        block = asdict(self)
        latency = block.pop("latency_total_s")
        block["mean_latency_s"] = latency / self.calls if self.calls else None
        return block


class Judge:
    def __init__(self, settings: JudgeSettings, api_key: str, cache: VerdictCache | None = None):
        self.settings = settings
        self._api_key = api_key
        self.cache = cache if cache is not None else VerdictCache(settings.cache_path)
        self.stats = JudgeStats()
        self.last_error: str | None = None
        self._client: AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, judge_cfg) -> "Judge":
        """The judge of the `judge` config group, with its key from the environment (ConfigError when unset)."""
        settings = JudgeSettings.from_config(judge_cfg)
        return cls(settings, settings.api_key())

    def __repr__(self) -> str:  # never shows the key (reprs end up in logs and tracebacks)
        return f"Judge(model={self.settings.model!r}, base_url={self.settings.base_url!r})"

    async def score(self, questions: list[str], completions: list[str], references: list[str | None]
                    ) -> list[float | None]:
        """One score in [0, 1] per completion (None: no valid verdict). Raises JudgeFailed per the policy."""
        settings, rubric = self.settings, self.settings.rubric
        keys = [cache_key(settings.model, rubric.version, question, reference, completion)
                for question, reference, completion in zip(questions, references, completions, strict=True)]
        verdicts = self.cache.get_many(keys)
        self.stats.cache_hits += sum(key in verdicts for key in keys)
        # A GRPO group often repeats a completion: one call per distinct (question, reference, completion).
        todo = {key: index for index, key in enumerate(keys) if key not in verdicts}
        if todo:
            semaphore = asyncio.Semaphore(settings.concurrency)
            client = self._client_for_this_loop()
            found = await asyncio.gather(*(self._verdict(client, semaphore, questions[i], references[i],
                                                         completions[i]) for i in todo.values()))
            fresh = {key: verdict for key, verdict in zip(todo, found) if verdict is not None}
            self.cache.put_many(fresh)
            verdicts.update(fresh)
            self._apply_failure_policy(len(todo), len(todo) - len(fresh))
        return [rubric.score(verdicts[key]) if key in verdicts else None for key in keys]

    def _client_for_this_loop(self) -> AsyncOpenAI:
        """One client (and connection pool) per event loop: TRL runs async rewards on one long-lived loop, so
        connections are reused across batches; building a client costs tens of milliseconds. The aiohttp
        transport needs about half the CPU per request of the default one (benchmarks/bench_judge.py)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = AsyncOpenAI(base_url=self.settings.base_url, api_key=self._api_key,
                                       timeout=self.settings.timeout_s, max_retries=self.settings.retries,
                                       http_client=DefaultAioHttpClient(limits=self._limits()))
            self._client_loop = loop
        return self._client

    def _limits(self):
        """The SDK's connection limits (httpx Limits), with idle connections kept judge.keepalive_s."""
        limits = DEFAULT_CONNECTION_LIMITS
        return type(limits)(max_connections=limits.max_connections,
                            max_keepalive_connections=max(limits.max_keepalive_connections, self.settings.concurrency),
                            keepalive_expiry=self.settings.keepalive_s)

    async def aclose(self) -> None:
        """Close the connections, on the loop that opened them."""
        if self._client is not None:
            await self._client.close()
        self._client = self._client_loop = None

    def close(self) -> None:
        """Close connections (on their loop, when it still runs: TRL's async-reward loop) and the cache."""
        loop = self._client_loop
        if self._client is not None and loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=30)
        self._client = self._client_loop = None
        self.cache.close()

    async def _verdict(self, client: AsyncOpenAI, semaphore: asyncio.Semaphore, question: str,
                       reference: str | None, completion: str) -> dict | None:
        settings = self.settings
        messages = judge_messages(settings.rubric, question, reference, completion)
        for attempt in range(settings.reask_invalid + 1):
            if attempt:
                self.stats.retries += 1
            async with semaphore:
                started = time.perf_counter()
                self.stats.calls += 1
                try:
                    # The messages go in extra_body, which the SDK merges into the JSON body as is. Passed as
                    # `messages`, they are first walked against the SDK's typed-params union: a no-op for plain
                    # text messages (tests/test_judge.py checks it) that cost ~0.2 ms of CPU per request, a
                    # quarter of the client's CPU per GRPO batch (0.12 -> 0.09 s, benchmarks/bench_judge.py).
                    raw = await client.chat.completions.with_raw_response.create(
                        model=settings.model, messages=[], extra_body={"messages": messages},
                        temperature=settings.temperature, max_tokens=settings.max_output_tokens,
                        response_format={"type": "json_object"})
                    self.stats.retries += raw.retries_taken
                    response = raw.parse()
                except openai.OpenAIError as error:
                    self._failed(started, error, retried=isinstance(error, _RETRIED_ERRORS))
                    return None  # the client already retried what is worth retrying
                finally:
                    self.stats.latency_total_s += time.perf_counter() - started
            if response.usage is not None:
                self.stats.prompt_tokens += response.usage.prompt_tokens
                self.stats.completion_tokens += response.usage.completion_tokens
            try:
                return parse_verdict(response.choices[0].message.content if response.choices else None,
                                     settings.rubric)
            except InvalidVerdict as error:
                self._failed(started, error, retried=False)
        return None

    def _failed(self, started: float, error: Exception, retried: bool) -> None:
        self.stats.failures += 1
        if retried:
            self.stats.retries += self.settings.retries
        self.last_error = f"{type(error).__name__}: {error}"
        log.warning("Judge call failed after %.1f s: %s", time.perf_counter() - started, self.last_error)

    def _apply_failure_policy(self, items: int, failed: int) -> None:
        stats, policy = self.stats, self.settings.failure_policy
        stats.items += items
        stats.failed_items += failed
        if failed:
            log.warning("Judge: %d of %d items got no verdict (their judge reward is skipped, not 0)", failed, items)
        rate = stats.failed_items / stats.items
        if stats.items >= policy.min_items and rate > policy.max_failure_rate:
            raise JudgeFailed(
                f"the judge at {self.settings.base_url} (model {self.settings.model}) failed on {stats.failed_items} "
                f"of {stats.items} items ({rate:.0%} > judge.failure_policy.max_failure_rate="
                f"{policy.max_failure_rate:.0%}); last error: {self.last_error}")
