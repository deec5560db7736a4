"""One tiny trained job per test session, shared by the predict and chat tests, and a chat server for them."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _run import ROOT, read_results, run_entrypoint


def tiny_job(tmp_path_factory, model_cache: Path) -> Path:
    """`python src/run.py preset=tiny grpo.max_steps=2 eval.limit=2` once per session (the next caller reuses it)."""
    job = tmp_path_factory.getbasetemp() / "tiny_job"
    if not (job / "results.json").is_file() or read_results(job)["status"] != "ok":
        done = run_entrypoint("preset=tiny", "grpo.max_steps=2", "eval.limit=2", f"hydra.run.dir={job}",
                              cache=model_cache.parent, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (job / "adapter" / "adapter_config.json").is_file()
    return job


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_chat(*args: str, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """`python -m medgrpo.chat <args> port=<free>` on 127.0.0.1; returns it and its URL once the page answers."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, "-m", "medgrpo.chat", *args, f"port={port}"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"chat ended (rc {process.returncode}):\n{process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            pass
        if time.time() > deadline:
            process.kill()
            raise AssertionError("chat page never answered")
        time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
