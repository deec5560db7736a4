"""Config checks that run before anything heavy is loaded, so that a bad value fails in a second, not after a
model download. Each error names the key and what was expected. Data and reward checks live beside their code
(medgrpo.data, medgrpo.rewards); this module checks the rest and calls them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from medgrpo.data.schema import register_source_schema
from medgrpo.errors import ConfigError, ConfigErrors, MedgrpoError


def _dirname_suffix(override_dirname: str) -> str:
    """'lora.rank=32,reward=weighted' -> '_lora.rank=32,reward=weighted', safe as one path component."""
    if not override_dirname:
        return ""
    return "_" + re.sub(r"[/\\:\s]+", "-", override_dirname)[:120]


if not OmegaConf.has_resolver("medgrpo.dirname_suffix"):
    OmegaConf.register_new_resolver("medgrpo.dirname_suffix", _dirname_suffix)

register_source_schema()
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def canonical_overrides(overrides: list[str]) -> list[str]:
    """'+experiment=x' -> 'experiment=x'. The defaults list has an `experiment` slot (so `experiment=x` works, as
    in lightning-hydra-template), which Hydra refuses to append to; the older `+experiment=x` spelling keeps
    working. 'data.balance={}' -> 'data.balance=null': Hydra merges a {} override into the existing mapping (a
    no-op), but an empty balance means no balancing."""
    overrides = [quote_path_value(o) for o in overrides]
    return [o[1:] if o.startswith("+experiment=") else EMPTY_BALANCE.sub(r"\1data.balance=null", o) for o in overrides]


EMPTY_BALANCE = re.compile(r"^(\+{0,2})data\.balance=\{\s*\}$")


def compose_config(*overrides: str, output_dir: str | Path) -> DictConfig:
    """The job config for `overrides`, as `python src/run.py` composes it (for tests, benchmarks, notebooks).
    The Hydra output dir does not exist outside a run, so the caller names the job's output dir."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=canonical_overrides(list(overrides)))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg



def quote_path_value(override: str) -> str:
    """`eval.adapter_path=multirun/x/0_lora.rank=4,reward=weighted` -> the value in quotes. Job folder names hold
    `=` and `,`, which Hydra's override grammar would read as syntax; a value with `=` can never be a sweep list,
    so it is quoted as it stands (values already quoted are left alone)."""
    key, sep, value = override.partition("=")
    if not sep or "=" not in value or value[:1] in ("'", '"'):
        return override
    return key + "='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def adopt_trained_job(cfg: DictConfig, user_overrides: list[str]) -> None:
    """eval.adapter_path may name a finished job's folder (or its adapter/ folder). Its adapter is then evaluated
    the way that job was set up, read from its results.json: the groups an adapter depends on (model, prompt, lora,
    data, backend, eval) are the job's, except those this command chooses itself (`data=samples`), and with this
    command's own keys (`eval.limit=50`) on top; the budget and evaluation switches stay this command's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    folder = Path(cfg.eval.adapter_path) if cfg.eval.adapter_path is not None else None
    job = next((f for f in (folder, folder and folder.parent) if f is not None and (f / "results.json").is_file()),
               None)
    if job is None or not (job / "adapter").is_dir():
        return
    trained = json.loads((job / "results.json").read_text()).get("config") or {}
    overrides = [o for o in OverridesParser.create().parse_overrides(user_overrides)
                 if not o.key_or_group.startswith("hydra")]
    chosen = {o.key_or_group.lstrip("+~") for o in overrides if "." not in o.key_or_group}
    adopted = [group for group in ADOPTED_GROUPS if group in trained and group not in chosen]
    switches = {key: cfg.eval[key] for key in ("after_training", "before_training", "during_training_steps")}
    with open_dict(cfg):
        for group in adopted:
            cfg[group] = trained[group]
        cfg.eval.update(switches)
        for override in overrides:
            if override.key_or_group.split(".")[0] in adopted and "." in override.key_or_group:
                OmegaConf.update(cfg, override.key_or_group, override.value(), force_add=True)
        cfg.eval.adapter_path = str(job / "adapter")
    logging.getLogger(__name__).info("evaluating the adapter of %s as that job was set up (%s from its results.json)",
                                     job, ", ".join(adopted))


# What a trained adapter depends on: an evaluation of it takes these from the job that trained it.
ADOPTED_GROUPS = ("model", "prompt", "lora", "data", "backend", "eval")

BACKENDS = ("auto", "hf", "unsloth")
BUDGET_MODES = ("off", "cap", "extend")
EVAL_ENGINES = ("auto", "hf", "vllm")


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(key, f"expected a positive integer, got {value!r}")


def _one_of(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(key, f"expected one of {list(allowed)}, got {value!r}")


def check_grpo(cfg: DictConfig) -> None:
    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    for key in cfg.grpo:
        if key not in fields:
            raise ConfigError(f"grpo.{key}", "not a field of trl.GRPOConfig (check the spelling)")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_generations",
                "max_completion_length", "max_steps"):
        _positive_int(cfg, f"grpo.{key}")
    if cfg.grpo.num_generations < 2:
        raise ConfigError("grpo.num_generations", "GRPO needs at least 2 completions per prompt to compare")
    steps_per_generation = cfg.grpo.get("steps_per_generation") or cfg.grpo.gradient_accumulation_steps
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # accelerate launch / torchrun set it
    generation_batch = cfg.grpo.per_device_train_batch_size * processes * steps_per_generation
    if generation_batch % cfg.grpo.num_generations:
        raise ConfigError(
            "grpo.num_generations",
            f"the generation batch (per_device_train_batch_size {cfg.grpo.per_device_train_batch_size} x "
            f"{processes} processes x steps_per_generation {steps_per_generation} = {generation_batch}) must be "
            f"divisible by num_generations ({cfg.grpo.num_generations})",
        )
    if cfg.grpo.learning_rate < 0:
        raise ConfigError("grpo.learning_rate", f"expected >= 0, got {cfg.grpo.learning_rate}")
    if cfg.grpo.get("beta", 0.0) < 0:  # a negative KL coefficient rewards drifting away from the reference
        raise ConfigError("grpo.beta", f"expected >= 0 (0 drops the KL term), got {cfg.grpo.beta}")
    if cfg.grpo.get("temperature", 1.0) <= 0:  # TRL samples rollouts; 0 would divide the logits by zero
        raise ConfigError("grpo.temperature", f"expected > 0, got {cfg.grpo.temperature}")


def check_model_path(model_cfg: DictConfig) -> None:
    """model.name_or_path is a local folder or a valid hub id (checked without the network, so a typo fails
    before any download is tried), or model.builder builds the model (a gguf builder's package is installed)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from medgrpo.backends import check_model_builder

    name = str(model_cfg.name_or_path)
    if model_cfg.get("builder") is not None:
        return check_model_builder(model_cfg)
    if Path(name).is_dir():
        return
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ConfigError("model.name_or_path", f"'{name}' is neither a local folder nor a hub id "
                                                "(namespace/name)") from None


def check_model_available(model_cfg: DictConfig) -> None:
    """Offline (HF_HUB_OFFLINE), a hub id must already be in the local Hugging Face cache. Called by the job after
    validate(): configs are validated offline (tests, sweeps planned on a laptop) for models they never load."""
    from huggingface_hub import constants, try_to_load_from_cache

    name = str(model_cfg.name_or_path)
    if model_cfg.get("builder") is not None or Path(name).is_dir():
        return
    if constants.HF_HUB_OFFLINE and try_to_load_from_cache(name, "config.json") is None:
        raise ConfigError("model.name_or_path", f"'{name}' is not a local folder and not in the Hugging Face "
                                                f"cache ({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set")


def check_budget(cfg: DictConfig) -> None:
    _one_of(cfg, "budget.mode", BUDGET_MODES)
    if cfg.budget.mode == "off":
        return
    _positive_int(cfg, "budget.max_thinking_tokens")
    _positive_int(cfg, "budget.max_answer_tokens")
    if cfg.budget.mode == "extend":
        num_ignore = cfg.budget.num_ignore
        if not isinstance(num_ignore, int) or num_ignore < 0:
            raise ConfigError("budget.num_ignore", f"expected an integer >= 0, got {num_ignore!r}")
        if not str(cfg.budget.wait_text).strip():
            raise ConfigError("budget.wait_text", "expected non-empty text such as 'Wait'")


def check_budget_delimiter(cfg: DictConfig) -> None:
    """Budget forcing cuts and extends at the end-of-thinking delimiter: the prompt must ask for it."""
    from medgrpo.prompting import PromptFormat

    prompt_format = PromptFormat.from_config(cfg.prompt)
    if cfg.budget.mode != "off" and prompt_format.think_close not in prompt_format.system:
        raise ConfigError("prompt.think_tag", f"budget={cfg.budget.mode} forces at '{prompt_format.think_close}', "
                          "but prompt.system never asks for it; use the prompt format the model answers in")


def check_eval(cfg: DictConfig) -> None:
    _one_of(cfg, "eval.engine", EVAL_ENGINES)
    for key in ("batch_size", "max_new_tokens", "num_samples"):
        _positive_int(cfg, f"eval.{key}")
    if cfg.eval.limit is not None:
        _positive_int(cfg, "eval.limit")
    if cfg.eval.num_samples > 1 and cfg.eval.temperature <= 0:
        raise ConfigError("eval.temperature", "num_samples > 1 needs sampling (temperature > 0); greedy repeats itself")
    if cfg.eval.adapter_path is not None:
        from medgrpo.backends import trained_weights_problem

        problem = trained_weights_problem(cfg.eval.adapter_path, cfg.lora.get("method", "lora"))
        if problem is not None:
            raise ConfigError("eval.adapter_path", problem)


def objective_keys(cfg: DictConfig) -> list[str]:
    """cfg.objective as a list: one metric key, or several for a multi-objective Optuna study."""
    return list(cfg.objective) if isinstance(cfg.objective, ListConfig) else [cfg.objective]


# Metric prefixes, and the switch that makes a job write metrics under each.
OBJECTIVE_STAGES = {"eval": "eval.after_training", "eval_base": "eval.before_training", "train": "train.enabled",
                    "eval_sft": "eval.after_training", "train_sft": "train.enabled"}  # *_sft: with stage=sft|sft_grpo


def unproduced_objectives(cfg: DictConfig) -> list[tuple[str, str]]:
    """(objective key, why this job never writes it) for each such objective: its stage is switched off, its eval
    set is not in data.eval, or it asks an open-answer set for accuracy (open answers are not graded)."""
    eval_sets = _eval_answer_types(cfg)
    unwritten = []
    for key in objective_keys(cfg):
        stage, *rest = str(key).split("/")
        switch = OBJECTIVE_STAGES.get(stage)
        if switch and not OmegaConf.select(cfg, switch):
            unwritten.append((key, f"{switch}=false"))
        elif stage.startswith("eval") and len(rest) == 2 and eval_sets is not None:
            name, metric = rest
            if name not in eval_sets:
                unwritten.append((key, f"data.eval is {list(eval_sets)}"))
            elif eval_sets[name] == "open" and metric.startswith("accuracy"):
                unwritten.append((key, f"'{name}' holds open-ended answers, which have no accuracy"))
    return unwritten


def check_objective(cfg: DictConfig) -> None:
    """Each objective is a metric key (eval/<dataset>/<metric>, eval_base/..., train/...) that the job will write;
    the refusal names objectives that would work."""
    for key in objective_keys(cfg):
        if str(key).split("/")[0] not in OBJECTIVE_STAGES:
            raise ConfigError("objective", f"expected a metric key like eval/<dataset>/accuracy, got '{key}'")
    for key, why in unproduced_objectives(cfg):
        raise ConfigError("objective", f"'{key}' is never written ({why}); objectives this job writes: "
                                       f"{', '.join(_written_objectives(cfg))}")


def _eval_answer_types(cfg: DictConfig) -> dict[str, str | None] | None:
    """data.eval's sets and their answer types, read from the config (no data loads); None when data.eval is not
    a list (data.validate_data_config reports that)."""
    names = OmegaConf.select(cfg, "data.eval", default=None)
    if not isinstance(names, ListConfig):
        return None
    return {str(name): OmegaConf.select(cfg, f"data.sources.{name}.answer_type", default=None) for name in names}


def _written_objectives(cfg: DictConfig) -> list[str]:
    """A few metric keys this job writes: accuracy of graded eval sets, safety rates of open ones, the reward."""
    keys = []
    if cfg.eval.after_training:
        for name, answer_type in (_eval_answer_types(cfg) or {}).items():
            keys += [f"eval/{name}/think_coverage", f"eval/{name}/risky_prescription_rate"] if answer_type == "open" \
                else [f"eval/{name}/accuracy"]
    return keys[:4] + (["train/reward"] if cfg.train.enabled else [])


def check_judge(cfg: DictConfig) -> None:
    """A reward that calls the LLM judge needs a valid `judge` group and its API key in the environment."""
    from medgrpo import rewards
    from medgrpo.judge import JudgeSettings

    if rewards.needs_judge(cfg.reward):
        JudgeSettings.from_config(cfg.judge).api_key()


def check_output_dir(path: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ConfigError("paths.output_dir", f"cannot write to {path}: {error.strerror or error}") from error


def _check_basics(cfg: DictConfig) -> None:
    _one_of(cfg, "backend.name", BACKENDS)
    if not isinstance(cfg.seed, int):
        raise ConfigError("seed", f"expected an integer, got {cfg.seed!r}")
    _positive_int(cfg, "model.max_seq_length")
    if not cfg.train.enabled and not (cfg.eval.after_training or cfg.eval.before_training):
        raise ConfigError("train.enabled", "with training off, evaluation must be on (eval.after_training=true)")


def validate(cfg: DictConfig) -> None:
    """All checks that need no model. Every check runs, so that a config with three mistakes costs one launch:
    one ConfigError/DataError naming its key, or ConfigErrors listing them all."""
    from medgrpo import data, rewards
    from medgrpo.backends import LoraSpec
    from medgrpo.cpu import plan_threads
    from medgrpo.evaluation.safety import SafetyRules
    from medgrpo.prompting import PromptFormat
    from medgrpo.resume import check_resume_config

    checks = [
        lambda: _check_basics(cfg),
        lambda: plan_threads(cfg.cpu),
        lambda: LoraSpec.from_config(cfg.lora),
        lambda: check_objective(cfg),
        lambda: check_grpo(cfg),
        lambda: check_model_path(cfg.model),
        lambda: check_resume_config(cfg.train, cfg.grpo),
        lambda: check_budget(cfg),
        lambda: check_budget_delimiter(cfg),
        lambda: check_eval(cfg),
        lambda: data.validate_data_config(cfg.data),
        lambda: rewards.build_reward_functions(cfg.reward, PromptFormat.from_config(cfg.prompt)),
        lambda: check_judge(cfg),
        lambda: SafetyRules.from_config(cfg.safety),
        lambda: check_output_dir(cfg.paths.output_dir),
    ]
    errors: list[MedgrpoError] = []
    for check in checks:
        try:
            check()
        except MedgrpoError as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)
