"""Job status and early refusals: the job folder lock, the sweep re-run that skips finished jobs, bad values
refused before any model loads, and W&B that cannot be reached within logger.init_timeout_s."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
from omegaconf import OmegaConf

from _run import read_results, run_entrypoint
from medgrpo.config import check_model_available, compose_config, validate
from medgrpo.errors import ConfigError, ConfigErrors
from medgrpo.jobfolder import (JobFolderBusy, count_skipped, finished_result, hold_job_folder, mark_skipped)


def test_a_folder_held_by_a_live_process_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom medgrpo.jobfolder import hold_job_folder\n"
                               f"with hold_job_folder({str(tmp_path)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / "results.json").write_text(json.dumps({"status": "running", "pid": holder.pid,
                                                           "host": {"name": "node7"}, "started_at": "t0"}))
        with pytest.raises(JobFolderBusy, match=f"in use by another running job \\(pid {holder.pid} on node7"):
            with hold_job_folder(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold_job_folder(tmp_path):  # the kernel released the dead holder's lock: no stale lock
        pass


def test_only_an_ok_job_with_the_same_config_counts_as_done(tmp_path):
    config = {"seed": 1, "lora": {"rank": 8}, "paths": {"output_dir": "a"}, "logger": {"mode": "online"},
              "train": {"enabled": True, "resume": "auto", "rerun": False}}
    results = {"status": "ok", "config": config, "metrics": {"train/reward": 0.5}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    moved = {**config, "paths": {"output_dir": "b"}, "logger": {"mode": "offline"},
             "train": {"enabled": True, "resume": "never", "rerun": True}}
    assert finished_result(tmp_path, moved) == results  # volatile keys aside, the same job
    assert finished_result(tmp_path, {**config, "lora": {"rank": 16}}) is None
    for status in ("failed", "interrupted", "running"):
        (tmp_path / "results.json").write_text(json.dumps({**results, "status": status}))
        assert finished_result(tmp_path, config) is None, status
    before = datetime.now(timezone.utc)
    mark_skipped(tmp_path, dict(results))
    assert count_skipped([tmp_path], before) == 1
    assert count_skipped([tmp_path], datetime(2999, 1, 1, tzinfo=timezone.utc)) == 0


def test_bad_values_are_refused_naming_each_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_config("preset=tiny", "grpo.beta=-0.5", "model.builder=null", "model.name_or_path=no such/model",
                         output_dir=tmp_path)
    with pytest.raises(ConfigErrors) as refused:
        validate(cfg)
    assert {"grpo.beta", "model.name_or_path"} <= set(refused.value.keys)
    for temperature in (0, -1):
        with pytest.raises(ConfigError) as refused:
            validate(compose_config("preset=tiny", f"grpo.temperature={temperature}", output_dir=tmp_path))
        assert refused.value.key == "grpo.temperature"
    cfg = compose_config("preset=tiny", "model.builder=null", "model.name_or_path=nobody/no-such-model",
                         output_dir=tmp_path)
    validate(cfg)  # a valid hub id: configs validate offline
    with pytest.raises(ConfigError, match="not in the Hugging Face cache .* HF_HUB_OFFLINE") as refused:
        check_model_available(cfg.model)  # what the job checks next, before any model loads
    assert refused.value.key == "model.name_or_path"


@pytest.mark.slow
def test_4bit_on_cpu_is_refused_after_backend_auto_before_the_model_loads(tmp_path, model_cache):
    result = run_entrypoint("preset=tiny", "backend=auto", "lora.load_in_4bit=true", f"hydra.run.dir={tmp_path}",
                            cache=model_cache.parent, env={"HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"})
    assert result.returncode == 2
    assert "config key 'lora.load_in_4bit': 4-bit (bitsandbytes) needs CUDA" in result.stderr + result.stdout
    assert "Loading" not in (tmp_path / "run.log").read_text()  # medgrpo.backends logs it as the model loads
    assert read_results(tmp_path)["status"] == "failed"


def _silent_server() -> tuple[socket.socket, int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: W&B that hangs, not refuses."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted = []

    def accept_forever():
        try:
            while True:
                accepted.append(server.accept())
        except OSError:  # the test closed the server
            pass

    threading.Thread(target=accept_forever, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.parametrize("environment", ["offline", "online", None])
def test_logger_disabled_starts_no_wandb_whatever_wandb_mode_says(environment, tmp_path, monkeypatch):
    from medgrpo.tracking import NullTracker, start_tracking

    if environment is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", environment)  # make exports WANDB_MODE=offline to every command
    logger_cfg = OmegaConf.create({"mode": "disabled", "project": "p", "entity": None, "group": None, "tags": [],
                                   "init_timeout_s": 2})
    tracker = start_tracking(logger_cfg, {}, tmp_path, "job", None)
    assert type(tracker) is NullTracker and tracker.describe() == {"mode": "disabled"}
    assert list(tmp_path.iterdir()) == []  # no wandb/ folder: nothing was started


@pytest.mark.slow
def test_unreachable_wandb_goes_offline_within_the_init_timeout(tmp_path, monkeypatch, caplog):
    from medgrpo.tracking import start_tracking

    server, port = _silent_server()
    for name in ("WANDB_MODE", "WANDB_INIT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)
    logger_cfg = OmegaConf.create({"mode": "online", "project": "p", "entity": None, "group": None, "tags": [],
                                   "init_timeout_s": 2})
    started = time.monotonic()
    tracker = start_tracking(logger_cfg, {}, tmp_path, "job", None)
    waited = time.monotonic() - started
    try:
        assert tracker.describe()["mode"] == "offline"
        assert "W&B unreachable after" in caplog.text and "Timed out initializing run" in caplog.text
        # init_timeout_s plus wandb's service start and the offline run (4 s in all at 3 s, under a load of 3). Before
        # the viewer query was switched off it took 2 x 5 s more (14 s at 3 s); wandb's default would wait 90 s.
        assert waited < 2 + 8, waited
    finally:
        tracker.finish()
        server.close()


@pytest.mark.slow
@pytest.mark.scale
def test_a_sweep_rerun_skips_finished_jobs_and_reruns_failed_ones(tmp_path, model_cache):
    sweep = tmp_path / "sweep"
    # job 0 trains one step; job 1 is refused (negative beta) and fails in a second
    args = ("-m", "preset=tiny", "grpo.max_steps=1", "eval.after_training=false", "objective=train/reward",
            "grpo.beta=0.0,-1.0", f"hydra.sweep.dir={sweep}")
    env = {"WANDB_MODE": "disabled"}
    first = run_entrypoint(*args, cache=model_cache.parent, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    done, failed = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert read_results(done)["status"] == "ok" and read_results(failed)["status"] == "failed"
    first_pid = read_results(done)["pid"]

    again = run_entrypoint(*args, cache=model_cache.parent, env=env)
    output = again.stdout + again.stderr
    assert again.returncode == 0 and output.count("Job already done") == 1, output[-3000:]
    assert "1 of the ok skipped" in output  # the sweep summary
    assert read_results(done)["pid"] == first_pid and "skipped_at" in read_results(done)
    assert read_results(failed)["pid"] != read_results(done)["pid"]  # the failed job ran again

    forced = run_entrypoint(*args, "train.rerun=true", cache=model_cache.parent, env=env)
    assert forced.returncode == 0 and "Job already done" not in forced.stdout + forced.stderr
    assert read_results(done)["pid"] != first_pid and read_results(done)["status"] == "ok"
