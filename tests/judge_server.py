"""A small OpenAI-compatible judge for tests and benchmarks: POST /v1/chat/completions on 127.0.0.1.

It grades the text inside <answer_to_grade> by a deterministic rule (rule_verdict) and injects faults on demand:
- per answer, with a marker in the answer text: [[429x2]] (the first two requests for it get 429), [[500x1]],
  [[timeoutx1]] (sleeps past the client's timeout), [[malformed]] (always non-JSON), [[range]] (always safety=11);
- for every request, with `always` ("429", "500", "timeout", "malformed", "range"), e.g. to test the failure policy;
- `latency_s` before every answer (the benchmark's 50 ms).
It checks the bearer key when `expected_key` is set and counts requests (`state.requests`, `state.by_status`).

    with serve(JudgeServer(expected_key="sk-test")) as (server, base_url): ...       # in a test (a thread)
    python tests/judge_server.py --latency-ms 50                                      # prints the port (benchmark)
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

_ANSWER = re.compile(r"<answer_to_grade>\n(.*)\n</answer_to_grade>", re.DOTALL)
_FAULT = re.compile(r"\[\[(429|500|timeout)x(\d+)\]\]")
CARE_WORDS = ("doctor", "emergency", "hospital", "医生", "急诊", "就医", "医院")
KIND_WORDS = ("sorry", "understand", "worried", "理解", "担心")


def rule_verdict(answer: str) -> dict:
    """The deterministic grade: safety from care words, logic from sentences, completeness from length."""
    lower = answer.lower()
    sentences = len([s for s in re.split(r"[.!?。！？]", answer) if s.strip()])
    return {"safety": 9 if any(w in lower for w in CARE_WORDS) else 3,
            "logic": min(10, 2 + 2 * sentences),
            "completeness": min(10, len(answer) // 20),
            "empathy": 8 if any(w in lower for w in KIND_WORDS) else 4,
            "rationale": "rule-based test verdict"}


@dataclass
class JudgeServer:
    expected_key: str | None = None
    latency_s: float = 0.0
    always: str | None = None
    timeout_sleep_s: float = 2.0
    retry_after_ms: int = 5        # sent with 429/500 (the openai client honours it): keeps tests fast
    requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    seen: Counter = field(default_factory=Counter)   # requests per answer text (for the xN faults)
    connections: set = field(default_factory=set)    # the client's (host, port) pairs: one per TCP connection

    def app(self) -> FastAPI:
        app = FastAPI()
        app.post("/v1/chat/completions")(self.chat)
        return app

    async def chat(self, request: Request):
        self.requests += 1
        self.connections.add((request.client.host, request.client.port))
        if self.expected_key is not None and request.headers.get("authorization") != f"Bearer {self.expected_key}":
            return self._status(401, {"error": {"message": "invalid api key", "type": "auth"}})
        body = await request.json()
        match = _ANSWER.search(body["messages"][-1]["content"])
        answer = match.group(1) if match else ""
        self.seen[answer] += 1
        fault = self.always or self._marked_fault(answer, self.seen[answer])
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault in ("429", "500"):
            return self._status(int(fault), {"error": {"message": f"injected {fault}", "type": "injected"}},
                                {"retry-after-ms": str(self.retry_after_ms)})
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
        verdict = rule_verdict(answer)
        if fault == "range" or (fault is None and "[[range]]" in answer):
            verdict["safety"] = 11
        content = "Sure! Here is my grade: 8/10" if fault == "malformed" or "[[malformed]]" in answer \
            else json.dumps(verdict)
        self.by_status[200] += 1
        words = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        # A JSONResponse skips FastAPI's generic encoder: the server should cost the benchmark little CPU.
        return JSONResponse({"id": f"judge-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                             "model": body.get("model", "rule-judge"),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": content}}],
                             "usage": {"prompt_tokens": words, "completion_tokens": len(content) // 4,
                                       "total_tokens": words + len(content) // 4}})

    @staticmethod
    def _marked_fault(answer: str, seen: int) -> str | None:
        for kind, times in _FAULT.findall(answer):
            if seen <= int(times):
                return kind
        return None

    def _status(self, status: int, body: dict, headers: dict | None = None):
        self.by_status[status] += 1
        return JSONResponse(body, status_code=status, headers=headers)


@contextlib.contextmanager
def serve(judge: JudgeServer):
    """Run the judge on a free 127.0.0.1 port in a thread; yields (judge, base_url); stops it on exit."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as production servers do: no 40 ms Nagle stalls
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(judge.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.01)
    try:
        yield judge, f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--always", default=None)
    parser.add_argument("--key", default=None)
    args = parser.parse_args()
    judge = JudgeServer(expected_key=args.key, latency_s=args.latency_ms / 1000, always=args.always)
    with serve(judge) as (_, base_url):
        print(base_url, flush=True)
        threading.Event().wait()  # until the parent terminates this process


if __name__ == "__main__":
    main()
