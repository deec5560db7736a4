"""The chat page in a real browser: Debian's Chromium (headless) driven by Playwright loads the page served by
`python -m medgrpo.chat`, asks a question and sees the answer and the collapsed thinking; screenshot in tmp_path."""
from __future__ import annotations

import shutil
import warnings

import pytest
from _tiny_job import start_chat, stop, tiny_job

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.slow
def test_page_answers_a_question_in_chromium(tmp_path_factory, model_cache, tmp_path):
    if shutil.which("chromium") is None:
        message = ("NO BROWSER: the headless-browser test of the chat page did not run; install Debian's Chromium "
                   "(apt-get install -y chromium, as .ci/run does)")
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    job = tiny_job(tmp_path_factory, model_cache)
    process, url = start_chat(f"run={job}")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            expect(page.get_by_text("not medical advice")).to_be_visible(timeout=60_000)
            page.locator("#question textarea").fill("Is aspirin an antiplatelet drug?")
            page.locator("#ask").click()
            # the tiny model writes no <reasoning> block: its words are the answer, below an empty collapsed thought
            expect(page.get_by_text("Thinking (0 tokens, 0 Waits)")).to_be_visible(timeout=120_000)
            page.screenshot(path=tmp_path / "chat.png", full_page=True)
            expect(page.get_by_text("no answer: the thinking was never closed")).to_have_count(0)
            browser.close()
    finally:
        stop(process)
    assert (tmp_path / "chat.png").stat().st_size > 10_000
