"""Config composition (Hydra compose API) and the checks that run before any model loads."""
from __future__ import annotations

import shutil

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import ListConfig, OmegaConf

from medgrpo.config import check_output_dir, compose_config, validate
from medgrpo.errors import ConfigError
from tests.conftest import ROOT


def test_default_config_is_the_recipe(tmp_path):
    cfg = compose_config(output_dir=tmp_path)
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-3B-Instruct"
    assert (cfg.lora.rank, cfg.lora.load_in_4bit) == (64, True)
    grpo = cfg.grpo
    assert (grpo.num_generations, grpo.learning_rate, grpo.lr_scheduler_type) == (6, 5e-6, "cosine")
    assert (grpo.adam_beta1, grpo.adam_beta2, grpo.weight_decay, grpo.warmup_steps) == (0.9, 0.99, 0.1, 0.1)
    assert (grpo.max_grad_norm, grpo.max_steps, grpo.max_completion_length) == (0.1, 750, 1024)
    assert cfg.backend.name == "auto" and cfg.budget.mode == "off"
    validate(cfg)


def test_tiny_preset_selects_cpu_sized_groups_and_command_line_wins(tmp_path):
    cfg = compose_config("preset=tiny", "grpo.max_steps=20", output_dir=tmp_path)
    assert cfg.model.builder == "tiny" and cfg.backend.name == "hf" and not cfg.lora.load_in_4bit
    assert cfg.grpo.max_steps == 20 and cfg.grpo.optim == "adamw_torch"
    assert compose_config("preset=tiny", "lora=r64", output_dir=tmp_path).lora.rank == 64
    validate(cfg)


# Groups with their own tests (hparams_search, experiment) or no options to choose (hydra, paths) stay out.
GROUPS = sorted(p.name for p in (ROOT / "conf").iterdir()
                if p.is_dir() and p.name not in ("hydra", "paths", "hparams_search", "experiment"))
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((ROOT / "conf" / group).glob("*.yaml"))]
# Options that cannot run on the CPU preset are still composed; they are validated only where they can run.
NEEDS_GPU_OR_HUB = {("lora", "r64"), ("grpo", "recipe"), ("backend", "unsloth"), ("model", "qwen2.5-3b"),
                    ("model", "qwen3-1.7b"), ("model", "llama3.2-3b")}


def test_the_option_list_is_read_from_conf():
    assert {"model", "data", "prompt", "reward", "lora", "grpo", "budget", "eval", "backend", "logger",
            "preset"} <= set(GROUPS)
    assert ("prompt", "think") in OPTIONS and ("data", "shared") in OPTIONS and ("grpo", "tiny") in OPTIONS


# A group outside the primary defaults list (an optional add-on) is appended with `+`.
IN_DEFAULTS = {next(iter(entry)) for entry in OmegaConf.load(ROOT / "conf" / "config.yaml").defaults
               if isinstance(entry, dict) or OmegaConf.is_dict(entry)}


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_of_every_group_composes_and_validates(group, option, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-compose-test")  # reward=judge_mix's judge key (its absence: test_judge_*)
    plus = "" if group in IN_DEFAULTS else "+"
    cfg = compose_config("preset=tiny", f"{plus}{group}={option}", output_dir=tmp_path)
    if (group, option) in NEEDS_GPU_OR_HUB:
        return
    if (group, option) == ("data", "shared") and not (ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("data=shared reads ../shared/data, which is not beside this checkout")
    validate(cfg)


def test_inherited_variants_keep_their_base_and_state_only_what_differs(tmp_path):
    recipe = compose_config(output_dir=tmp_path)
    tiny = compose_config("preset=tiny", output_dir=tmp_path)
    # grpo/tiny inherits the recipe: keys it does not restate are the recipe's.
    assert (tiny.grpo.adam_beta2, tiny.grpo.loss_type, tiny.grpo.beta) == (0.99, "dapo", 0.0)
    assert (tiny.grpo.max_steps, tiny.grpo.optim) == (8, "adamw_torch")
    assert set(tiny.grpo) == set(recipe.grpo) and set(tiny.eval) == set(recipe.eval)
    assert (tiny.eval.top_p, tiny.eval.limit, tiny.eval.engine) == (1.0, 16, "hf")
    assert (tiny.lora.dropout, tiny.lora.rank, tiny.lora.alpha) == (0.0, 8, 16)
    offline = compose_config("logger=wandb_offline", output_dir=tmp_path).logger
    assert (offline.mode, offline.project) == ("offline", "medgrpo")
    hf = compose_config("backend=hf", output_dir=tmp_path).backend
    assert (hf.name, hf.fast_inference, hf.gpu_memory_utilization) == ("hf", False, 0.5)
    assert compose_config("model=qwen3-1.7b", output_dir=tmp_path).model.max_seq_length == 2048


def test_a_typo_in_a_source_file_fails_at_composition(tmp_path):
    from hydra.errors import ConfigCompositionException

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    source = conf / "data" / "sources" / "gsm8k.yaml"
    source.write_text(source.read_text().replace("  question: question", "  qestion: question"))
    with pytest.raises(ConfigCompositionException, match="qestion"):
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            compose("config", overrides=["preset=tiny"])


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "data" / "sources").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_source_file_uses_the_schema(path):
    assert "- source_schema" in path.read_text()


@pytest.mark.parametrize("override, key, expected", [
    ("grpo.num_generations=3", "grpo.num_generations", "must be divisible by num_generations"),
    ("grpo.num_generations=1", "grpo.num_generations", "at least 2"),
    ("grpo.max_completion_length=0", "grpo.max_completion_length", "positive integer"),
    ("grpo.per_device_train_batch_size=-8", "grpo.per_device_train_batch_size", "positive integer"),
    ("lora.rank=0", "lora.rank", "positive integer"),
    ("lora.alpha=-1", "lora.alpha", "positive number"),
    ("+grpo.not_a_field=1", "grpo.not_a_field", "not a field of trl.GRPOConfig"),
    ("budget=cap budget.max_thinking_tokens=0", "budget.max_thinking_tokens", "positive integer"),
    ("budget=extend budget.num_ignore=-1", "budget.num_ignore", "integer >= 0"),
    ("eval.num_samples=4", "eval.temperature", "needs sampling"),
    ("budget=cap prompt.think_tag=thinking", "prompt.think_tag", "never asks for it"),
    ("eval.adapter_path=/nonexistent/adapter", "eval.adapter_path", "no trained weights"),
    ("backend.name=tpu", "backend.name", "expected one of"),
    ("train.enabled=false eval.after_training=false", "train.enabled", "evaluation must be on"),
])
def test_bad_values_name_the_key(override, key, expected, tmp_path):
    cfg = compose_config("preset=tiny", *override.split(), output_dir=tmp_path)
    with pytest.raises(ConfigError, match=expected) as error:
        validate(cfg)
    assert error.value.key == key


def test_an_output_dir_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="paths.output_dir"):
        check_output_dir(str(blocker / "job"))


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_composes_and_validates(name, tmp_path):
    cfg = compose_config("preset=tiny", f"+experiment={name}", output_dir=tmp_path)
    assert cfg.task_name == name
    validate(cfg)
    # experiments/ is the `experiment` group through the search path: both spellings select the same study.
    assert compose_config("preset=tiny", f"experiment={name}", output_dir=tmp_path) == cfg


def test_conf_has_no_symlinks():
    assert not [p for p in (ROOT / "conf").rglob("*") if p.is_symlink()]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml")))
def test_every_study_composes_to_its_own_objective_and_directions(name, tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    own = OmegaConf.load(ROOT / "conf" / "hparams_search" / f"{name}.yaml")
    assert cfg.objective == own.objective
    # the direction is the study's own, or the shared sweeper option's (conf/hydra/sweeper/study.yaml)
    shared = OmegaConf.load(ROOT / "conf" / "hydra" / "sweeper" / "study.yaml")
    directions = OmegaConf.select(own, "hydra.sweeper.direction", default=shared.direction)
    assert cfg.hydra.sweeper.direction == directions
    objectives = own.objective if isinstance(own.objective, ListConfig) else [own.objective]
    assert len(objectives) == (len(directions) if isinstance(directions, ListConfig) else 1)


def test_the_studies_share_one_sweeper_block():
    """Sampler seed, storage and batch size are set once (conf/hydra/sweeper/study.yaml), not per study."""
    for path in sorted((ROOT / "conf" / "hparams_search").glob("*.yaml")):
        sweeper = OmegaConf.load(path).hydra.sweeper
        assert not {"storage", "n_jobs"} & set(sweeper), path.name
        assert "seed" not in sweeper.get("sampler", {}), path.name
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"hparams_search={path.stem}"], return_hydra_config=True)
        assert (cfg.hydra.sweeper.storage, cfg.hydra.sweeper.n_jobs, cfg.hydra.sweeper.sampler.seed) == (None, 1, 42)


def test_validate_reports_every_bad_key_at_once(tmp_path):
    from medgrpo.errors import ConfigErrors

    cfg = compose_config("preset=tiny", "lora.rank=0", "grpo.num_generations=1", "budget=cap",
                         "budget.max_thinking_tokens=0", output_dir=tmp_path)
    with pytest.raises(ConfigErrors) as error:
        validate(cfg)
    assert error.value.keys == ["lora.rank", "grpo.num_generations", "budget.max_thinking_tokens"]
    assert str(error.value).startswith("3 problems in the config:")


@pytest.mark.slow
def test_a_users_mistake_prints_one_line_not_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run([sys.executable, str(ROOT / "src" / "run.py"), "preset=tiny", "lora.rank=0",
                           f"hydra.run.dir={tmp_path}/job"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "config key 'lora.rank': expected a positive integer, got 0" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert '"status": "failed"' in (tmp_path / "job" / "results.json").read_text()


def test_an_objective_the_job_never_writes_is_refused_before_anything_loads(tmp_path):
    cfg = compose_config("preset=tiny", "eval.after_training=false", output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"never written \(eval.after_training=false\)") as error:
        validate(cfg)
    assert error.value.key == "objective"
    validate(compose_config("preset=tiny", "eval.after_training=false", "objective=train/reward",
                            output_dir=tmp_path))
    validate(compose_config("preset=tiny", "eval.after_training=false", "eval.before_training=true",
                            "objective=eval_base/pubmedqa/accuracy", output_dir=tmp_path))


@pytest.mark.parametrize("overrides, why, suggested", [
    (["data.eval=[gsm8k]"], "data.eval is ['gsm8k']", "eval/gsm8k/accuracy, train/reward"),
    (["data=open_samples", "objective=eval/pubmedqa/accuracy"], "data.eval is ['open_gold', 'redteam']",
     "eval/open_gold/think_coverage"),
    (["data=open_samples", "objective=eval/redteam/accuracy"], "'redteam' holds open-ended answers",
     "eval/redteam/risky_prescription_rate"),
])
def test_an_objective_on_a_set_the_job_does_not_grade_is_refused_with_objectives_that_work(overrides, why, suggested,
                                                                                           tmp_path):
    with pytest.raises(ConfigError, match="never written") as error:
        validate(compose_config("preset=tiny", *overrides, output_dir=tmp_path))
    assert error.value.key == "objective" and why in str(error.value) and suggested in str(error.value)


def test_open_samples_brings_an_objective_its_sets_write(tmp_path, monkeypatch):
    """conf/judge/deepseek.yaml's command, as written: the default objective (eval/pubmedqa/accuracy) is replaced by
    one the open sets write; an objective given on the command line or by a study still wins."""
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-compose-test")
    cfg = compose_config("reward=judge_mix", "data=open_samples", output_dir=tmp_path)
    assert cfg.objective == "eval/redteam/emergency_advice_coverage" and list(cfg.data.eval) == ["open_gold", "redteam"]
    validate(cfg)
    assert compose_config("data=open_samples", "objective=train/reward", output_dir=tmp_path).objective == "train/reward"
    assert compose_config("data=open_samples", "hparams_search=smoke_optuna", output_dir=tmp_path).objective == \
        "train/reward"


def test_a_job_folder_name_is_quoted_for_hydra():
    from medgrpo.config import canonical_overrides

    assert canonical_overrides(["eval.adapter_path=multirun/x/0_lora.rank=4,reward=weighted", "lora.rank=8,16",
                                "+experiment=lora_rank", "eval.adapter_path='a=b'"]) == [
        "eval.adapter_path='multirun/x/0_lora.rank=4,reward=weighted'", "lora.rank=8,16", "experiment=lora_rank",
        "eval.adapter_path='a=b'"]


def test_evaluating_a_job_folder_adopts_how_that_job_was_set_up(tmp_path):
    import json

    from medgrpo.config import adopt_trained_job, canonical_overrides

    job = tmp_path / "0_lora.rank=4,reward=weighted"
    (job / "adapter").mkdir(parents=True)
    trained = compose_config("preset=tiny", "eval.limit=7", "lora.rank=4", output_dir=job)
    (job / "results.json").write_text(json.dumps({"config": OmegaConf.to_container(trained, resolve=True)}))
    overrides = ["train.enabled=false", f"eval.adapter_path={job}", "budget=cap", "eval.batch_size=3"]
    cfg = compose_config(*overrides, output_dir=tmp_path / "eval")
    adopt_trained_job(cfg, canonical_overrides(overrides))
    assert cfg.eval.adapter_path == str(job / "adapter")
    assert (cfg.model.builder, cfg.lora.rank, cfg.lora.load_in_4bit, cfg.data.eval) == (
        "tiny", 4, False, trained.data.eval)
    assert (cfg.eval.limit, cfg.eval.batch_size, cfg.budget.mode) == (7, 3, "cap")  # this command's keys win
    with_samples = compose_config(*overrides, "data=shared", output_dir=tmp_path / "eval2")
    adopt_trained_job(with_samples, canonical_overrides([*overrides, "data=shared"]))
    assert with_samples.data.shared_dir == "../shared/data"  # a group chosen on this command stays this command's
