"""The chat page (medgrpo.chat): budget and thinking helpers, then `python -m medgrpo.chat` on 127.0.0.1 with a tiny
trained job, driven through gradio_client over HTTP: one question in the chat mode, one side by side (job vs base)."""
from __future__ import annotations

import urllib.request

import pytest
from _run import run_module
from _tiny_job import start_chat, stop, tiny_job

from medgrpo.chat import DISCLAIMER, forced_budget, split_thinking
from medgrpo.evaluation.budget import Budget


def test_split_thinking_keeps_the_answer_apart():
    assert split_thinking("<think>\nbleeding risk</think>\n<answer>no</answer>", "<think>", "</think>") == (
        "bleeding risk", "<answer>no</answer>")
    assert split_thinking("<think> still going", "<think>", "</think>") == ("still going", "")
    # no thinking block at all (a base model that ignores the format): its text is the answer
    assert split_thinking("No. Steroids are not...", "<think>", "</think>") == ("", "No. Steroids are not...")


def test_sliders_map_to_s1_budget_forcing():
    job = Budget(mode="off", max_new_tokens=64)
    assert forced_budget(job, 0, 3) is job  # 0: the job's own budget
    assert forced_budget(job, 16, 0) == Budget(mode="cap", max_new_tokens=64, max_thinking_tokens=16,
                                               max_answer_tokens=64)
    extend = forced_budget(Budget(mode="cap", max_thinking_tokens=8, max_answer_tokens=20), 32, 2)
    assert (extend.mode, extend.max_thinking_tokens, extend.num_ignore, extend.max_answer_tokens) == (
        "extend", 32, 2, 20)


@pytest.mark.slow
def test_unknown_job_is_refused_before_loading(tmp_path):
    done = run_module("medgrpo.chat", f"run={tmp_path / 'nowhere'}")
    assert done.returncode == 2 and "no such job directory" in done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_chat_and_side_by_side_through_gradio_client(tmp_path_factory, model_cache):
    from gradio_client import Client

    job = tiny_job(tmp_path_factory, model_cache)
    process, url = start_chat(f"run={job}", "run2=base")
    try:
        client = Client(url, verbose=False)
        cleared, history = client.predict("Is aspirin an antiplatelet drug?", [], 8, 1, 0.0, api_name="/ask")
        assert cleared == ""
        user, thinking, answer = history
        assert (user["role"], user["content"][0]["text"]) == ("user", "Is aspirin an antiplatelet drug?")
        assert thinking["metadata"]["title"].startswith("Thinking (")  # shown as a collapsed thought
        assert thinking["metadata"]["status"] == "done" and answer["role"] == "assistant" and answer["content"]
        # s1 cap: at most 8 thinking tokens, then the delimiter and an answer phase
        assert int(thinking["metadata"]["title"].split("(")[1].split()[0]) <= 8

        _, left, right = client.predict("Can I take ibuprofen with warfarin?", 0, 0, 0.0, api_name="/compare")
        for side in (left, right):
            assert side[0]["role"] == "user" and side[1]["metadata"]["title"] and side[2]["content"]
        page = client.view_api(print_info=False, return_format="dict")
        assert {"/ask", "/compare"} <= set(page["named_endpoints"])
        with urllib.request.urlopen(f"{url}config", timeout=30) as response:
            assert DISCLAIMER.split("**")[1] in response.read().decode()  # the disclaimer is on the page
    finally:
        stop(process)
