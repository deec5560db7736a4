"""Training resume: checkpoint choice, torn checkpoints, config identity, and a real SIGKILL + resume that ends
exactly like an uninterrupted job (the reference job also loses its W&B process mid-run and still finishes)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from _run import read_jsonl, read_results, start_entrypoint, training_started, wait_for
from medgrpo.analysis.jobs import load_job
from medgrpo.config import compose_config, validate
from medgrpo.errors import ConfigError, ConfigErrors
from medgrpo.resume import (IDENTITY_FILE, ResumeCallback, ResumePlan, check_identity, newest_complete_checkpoint,
                            plan_resume, prepare_trainer, torn_reason)

IDENTITY = {"model.name_or_path": "Qwen/Qwen2.5-3B-Instruct", "lora.rank": 64, "lora.alpha": 64.0,
            "lora.target_modules": ["q_proj", "v_proj"], "lora.load_in_4bit": True}


def make_checkpoint(checkpoints: Path, step: int, identity: dict = IDENTITY, complete: bool = True) -> Path:
    """A checkpoint folder with the files transformers writes (contents are stand-ins: only presence counts)."""
    folder = checkpoints / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / IDENTITY_FILE).write_text(json.dumps({"step": step, "identity": identity}))
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (folder / name).write_bytes(b"x")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_a_torn_checkpoint_is_skipped_and_removed(tmp_path):
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4)
    torn = make_checkpoint(tmp_path, 6, complete=False)  # killed before trainer_state.json
    half_state = make_checkpoint(tmp_path, 8)
    (half_state / "trainer_state.json").write_text('{"global_step": 8, "log_hist')  # killed mid-write
    assert torn_reason(torn) == "missing trainer_state.json"
    assert torn_reason(half_state).startswith("trainer_state.json unreadable")
    assert newest_complete_checkpoint(tmp_path).name == "checkpoint-4"
    assert not torn.exists() and not half_state.exists()
    assert (tmp_path / "checkpoint-2").exists()


def test_torn_reasons(tmp_path):
    folder = make_checkpoint(tmp_path, 3)
    assert torn_reason(folder) is None
    (folder / "optimizer.pt").unlink()
    assert torn_reason(folder) == "missing optimizer.pt"
    other = make_checkpoint(tmp_path, 5)
    (other / "checkpoint-is-incomplete.txt").write_text("in progress")  # transformers' JIT checkpoint sentinel
    assert "checkpoint-is-incomplete.txt" in torn_reason(other)
    renamed = make_checkpoint(tmp_path, 7)
    (renamed / "trainer_state.json").write_text(json.dumps({"global_step": 9}))
    assert torn_reason(renamed) == "trainer_state.json says step 9"


def test_the_newest_checkpoint_is_the_highest_step_not_the_last_name(tmp_path):
    for step in (9, 10, 100, 99):
        make_checkpoint(tmp_path, step)
    assert newest_complete_checkpoint(tmp_path).name == "checkpoint-100"  # by name, 99 and 9 sort after 100
    (tmp_path / "checkpoint-100" / "trainer_state.json").unlink()
    assert newest_complete_checkpoint(tmp_path).name == "checkpoint-99"
    (tmp_path / "checkpoint-99" / "rng_state.pth").unlink()
    assert newest_complete_checkpoint(tmp_path).name == "checkpoint-10"
    (tmp_path / "checkpoint-later").mkdir()  # not a checkpoint-<step> folder: ignored, never removed
    assert newest_complete_checkpoint(tmp_path).name == "checkpoint-10" and (tmp_path / "checkpoint-later").is_dir()


def test_a_checkpoint_needs_its_weights(tmp_path):
    folder = make_checkpoint(tmp_path, 4)
    (folder / "adapter_model.safetensors").unlink()
    assert torn_reason(folder) == "missing model/adapter weights"
    (folder / "optimizer.pt").unlink()
    assert torn_reason(folder) == "missing model/adapter weights, optimizer.pt"
    (folder / "optimizer.pt").write_bytes(b"x")
    for weights in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.bin"):
        (folder / weights).write_bytes(b"x")  # full fine-tuning (lora=full), sharded, or the older formats
        assert torn_reason(folder) is None, weights
        (folder / weights).unlink()
    assert newest_complete_checkpoint(tmp_path) is None and not folder.exists()


def test_a_resumed_trainer_counts_micro_steps_with_gradient_accumulation():
    """GRPOTrainer._step counts micro-steps: 6 optimizer steps of 4 accumulated batches are 24."""
    trainer = SimpleNamespace(_step=0, args=SimpleNamespace(gradient_accumulation_steps=4))
    prepare_trainer(trainer, ResumePlan(Path("checkpoints/checkpoint-6")))
    assert trainer._step == 24
    fresh = SimpleNamespace(_step=0, args=SimpleNamespace(gradient_accumulation_steps=4))
    prepare_trainer(fresh, ResumePlan(None))
    assert fresh._step == 0


@pytest.mark.parametrize(("batches", "accumulation", "global_step", "epochs_done"), [
    (9, 1, 8, 0),    # 9 steps an epoch: step 8 is in the first
    (9, 1, 9, 1),
    (8, 2, 8, 2),    # 8 batches, 2 per step: 4 steps an epoch
    (9, 2, 8, 1),    # 9 batches, 2 per step: 5 steps an epoch (the last takes the odd batch), as transformers counts
    (9, 2, 10, 2),
    (12, 3, 10, 2),  # 12 batches, 3 per step: 4 steps an epoch, step 10 is in the third
    (3, 4, 2, 2),    # fewer batches than accumulation: an epoch is 1 step
])
def test_a_resumed_sampler_draws_the_orders_of_the_epochs_already_trained(batches, accumulation, global_step,
                                                                          epochs_done):
    """TRL's RepeatSampler draws one permutation per epoch; resuming at global_step, transformers starts in epoch
    global_step // steps_per_epoch (steps_per_epoch = ceil(batches / accumulation), transformers Trainer
    set_initial_training_values), so the sampler must have drawn that many permutations already."""
    from torch.utils.data import DataLoader
    from transformers import TrainerState
    from trl.trainer.utils import RepeatSampler

    prompts = list(range(batches))  # each prompt twice (a group of 2), 2 indices a batch: `batches` batches
    sampler = RepeatSampler(prompts, mini_repeat_count=2, batch_size=1, seed=42)
    loader = DataLoader(prompts, batch_size=2, sampler=sampler)
    assert len(loader) == batches
    callback = ResumeCallback(ResumePlan(Path(f"checkpoint-{global_step}")))
    callback.on_train_begin(SimpleNamespace(gradient_accumulation_steps=accumulation),
                            TrainerState(global_step=global_step), None, model=None, train_dataloader=loader)
    expected = torch.Generator().manual_seed(42)
    orders = [torch.randperm(batches, generator=expected) for _ in range(epochs_done + 1)]
    assert torch.equal(torch.randperm(batches, generator=sampler.generator), orders[-1])


def test_a_checkpoint_of_another_config_is_refused_naming_the_key(tmp_path):
    folder = make_checkpoint(tmp_path, 4)
    for key, value in (("lora.rank", 32), ("model.name_or_path", "meta-llama/Llama-3.2-3B-Instruct"),
                       ("lora.target_modules", ["q_proj"])):
        with pytest.raises(ConfigError) as refused:
            check_identity(folder, {**IDENTITY, key: value})
        assert refused.value.key == key
        assert str(IDENTITY[key]) in str(refused.value) and "train.resume=never" in str(refused.value)
    with pytest.raises(ConfigError) as refused:  # a PEFT method the checkpoint never had
        check_identity(folder, {**IDENTITY, "lora.use_dora": True})
    assert refused.value.key == "lora.use_dora"
    check_identity(folder, dict(IDENTITY))


def test_resume_modes(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    assert plan_resume("auto", checkpoints, IDENTITY).checkpoint is None  # a new job folder
    make_checkpoint(checkpoints, 2)
    make_checkpoint(checkpoints, 4)
    assert plan_resume("auto", checkpoints, IDENTITY).step == 4
    assert plan_resume(str(checkpoints / "checkpoint-2"), checkpoints, IDENTITY).step == 2
    torn = make_checkpoint(checkpoints, 6, complete=False)
    with pytest.raises(ConfigError, match="train.resume.*incomplete"):
        plan_resume(str(torn), checkpoints, IDENTITY)
    with pytest.raises(ConfigError, match="train.resume.*checkpoint-<step>"):
        plan_resume(str(tmp_path / "nowhere"), checkpoints, IDENTITY)
    never = plan_resume("never", checkpoints, IDENTITY)
    assert never.checkpoint is None and not checkpoints.exists()  # moved aside, never mixed into the new run
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == ["checkpoints.before"]


@pytest.mark.parametrize("override, key", [("+grpo.resume_from_checkpoint=/x/checkpoint-4", "grpo.resume_from_checkpoint"),
                                           ("+grpo.enable_jit_checkpoint=true", "grpo.enable_jit_checkpoint")])
def test_the_trainers_own_resume_switches_are_refused(tmp_path, override, key):
    with pytest.raises((ConfigError, ConfigErrors)) as refused:
        validate(compose_config("preset=tiny", override, output_dir=tmp_path))
    assert refused.value.key == key
    if key == "grpo.resume_from_checkpoint":
        assert "train.resume" in str(refused.value)


# The recipe's rewards are all 0 for the random tiny model (no gradient, nothing to compare): a word-repetition
# penalty over 64-token completions varies within groups, so the adapter really moves.
JOB = ("preset=tiny", "grpo.max_steps=4", "grpo.save_steps=2", "grpo.save_total_limit=2", "grpo.max_completion_length=64",
       "+reward.weights.repetition=1.0", "+reward.params.repetition.ngram_size=1", "eval.after_training=false",
       "objective=train/reward")


def _job(job_dir: Path, cache: Path, env: dict):
    return start_entrypoint(*JOB, f"hydra.run.dir={job_dir}", cache=cache, env=env)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every descendant process, read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += frontier
    commands = []
    for child in found:
        try:
            commands.append((child, Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue
    return commands


def _step_log(job_dir: Path) -> list[tuple]:
    return [(e["step"], e["loss"], e["reward"]) for e in read_jsonl(job_dir / "train_log.jsonl") if "reward" in e]


@pytest.mark.slow
@pytest.mark.scale  # a second process resumes what the killed one left: make test-scale
def test_a_job_killed_with_sigkill_resumes_exactly(tmp_path, model_cache):
    cache = model_cache.parent
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    # Both start together (two cores); the reference job keeps W&B (offline) and loses its wandb-core process.
    ref_job = _job(reference, cache, {"WANDB_MODE": "offline"})
    job = _job(resumed, cache, {"WANDB_MODE": "disabled"})

    wait_for(lambda: training_started(reference), ref_job, "the reference job's training")
    wandb_processes = [pid for pid, command in _children(ref_job.pid) if "wandb-core" in command]
    assert wandb_processes, _children(ref_job.pid)
    for pid in wandb_processes:
        os.kill(pid, signal.SIGKILL)

    first = resumed / "checkpoints" / "checkpoint-2"
    wait_for(lambda: first.is_dir() and torn_reason(first) is None, job, "the first checkpoint")
    os.kill(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    killed = load_job(resumed)
    assert killed.status == "killed" and "is gone" in killed.error  # results.json still says running
    torn = resumed / "checkpoints" / "checkpoint-99"  # as if killed while writing a later checkpoint
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"half")
    killed_at = max(int(p.name.split("-")[1]) for p in (resumed / "checkpoints").glob("checkpoint-*")
                    if torn_reason(p) is None)

    job = _job(resumed, cache, {"WANDB_MODE": "disabled"})  # the same command again
    assert job.wait(timeout=900) == 0, job.stdout.read()[-3000:]
    assert ref_job.wait(timeout=900) == 0, ref_job.stdout.read()[-3000:]
    ref_output = ref_job.stdout.read()
    assert "W&B stopped working" in ref_output

    results = read_results(resumed)
    assert results["status"] == "ok" and results["resumed_from"] == killed_at
    assert read_results(reference)["status"] == "ok" and read_results(reference)["resumed_from"] is None
    assert not torn.exists()
    expected, got = _step_log(reference), _step_log(resumed)
    assert [s for s, _, _ in got] == [1, 2, 3, 4]
    assert any(reward != 0 for _, _, reward in expected), expected  # a real training signal
    assert [v for row in got for v in row] == pytest.approx([v for row in expected for v in row], abs=1e-5)
    weights = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    initial = load_file(str(reference / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"))
    assert any(not torch.equal(initial[name], tensor) for name, tensor in weights.items())  # training moved them
    resumed_weights = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert weights.keys() == resumed_weights.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, atol=1e-6, rtol=1e-5, msg=name)
