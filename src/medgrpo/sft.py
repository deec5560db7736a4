"""Supervised fine-tuning, the `sft` stage of stage=sft|sft_grpo: TRL's SFTTrainer on the sources' targets.

    dataset, report = prepare_sft(cfg.stage.sft, cfg.data, tokenizer, prompt_format, seed)   # prompt/completion
    metrics, info = run_sft(cfg.stage.sft, cfg.data, policy, prompt_format, lora, cache_root, output_dir, report_to)

A target is written in the prompt group's format, "<reasoning>\\n{reasoning}\\n</reasoning>\\n<answer>\\n{answer}
\\n</answer>" (or <think>), exactly the layout strict_format pays for, so SFT teaches what GRPO then rewards. The
reasoning comes from the source's `fields.target` column (cleaned by its `target.until` / `target.remove`), the
answer is the item's gold answer. A `target.format: plain` source (a dialogue corpus) is plain chat: the user turn
and the reference answer, without system prompt or tags. The loss covers the completion only.

TRL truncates a too-long example from its end, which cuts the answer and the end-of-turn token first. Here the
*context* of such an example is shortened to fit `trainer.max_length`; an example without a context that does not
fit is dropped, and both are counted in the report.

SFT runs once per distinct SFT setting: its weights are cached under a hash of everything that shapes them (model,
PEFT method, stage.sft, the sources and their files, prompt format, tokenizer, code version), so a sweep over GRPO
settings (or GRPO seeds, with stage.sft.seed fixed) starts every job from one SFT checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf

from medgrpo.errors import ConfigError
from medgrpo.prompting import ANSWER_CLOSE, ANSWER_OPEN, PromptFormat
from medgrpo.results import write_json_atomic

log = logging.getLogger(__name__)

STAGES = ("sft", "grpo")
DONE = "sft_done.json"
CONTEXT_MARGIN = 4  # tokens: re-encoding a cut context can merge differently at the cut


def job_stages(stage_cfg: DictConfig, train_enabled: bool) -> list[str]:
    """The trainings a job runs, in order ([] for an evaluation-only job)."""
    stages = list(stage_cfg.stages)
    if not stages or any(s not in STAGES for s in stages) or stages != sorted(stages, key=STAGES.index):
        raise ConfigError("stage.stages", f"expected a non-empty ordered subset of {list(STAGES)}, got {stages}")
    return stages if train_enabled else []


def render_target(reasoning: str, answer: str, prompt_format: PromptFormat) -> str:
    return (f"{prompt_format.think_open}\n{reasoning}\n{prompt_format.think_close}\n"
            f"{ANSWER_OPEN}\n{answer}\n{ANSWER_CLOSE}")


def clean_reasoning(text: str, target: dict, max_words: int | None) -> str:
    """The reasoning part of a target column: cut at `until`, `remove` deleted, at most max_words words."""
    if target.get("until") and target["until"] in text:
        text = text[: text.index(target["until"])]
    if target.get("remove"):
        text = re.sub(target["remove"], "", text)
    words = text.split()
    return " ".join(words[:max_words] if max_words else words)


def sft_plan(sft_cfg: DictConfig, data_cfg):
    """The data plan of the SFT stage: the data group's plan with the SFT sources parsed and the SFT mix as its
    mix (its evaluation sets stay: the leakage check runs against them)."""
    from medgrpo.data.spec import parse_source, root_dir, validate_data_config

    plan = validate_data_config(data_cfg)
    sources = dict(plan.sources)
    for name in ([] if sft_cfg.mix is None else list(sft_cfg.mix)):
        if name not in sources and name in data_cfg.sources:
            sources[name] = parse_source(name, data_cfg.sources[name], root_dir(data_cfg))
    plan = dataclasses.replace(plan, sources=sources)
    return dataclasses.replace(plan, mix=sft_mix(sft_cfg, plan))


def sft_mix(sft_cfg: DictConfig, plan) -> dict[str, float]:
    """SFT source -> weight (normalised): stage.sft.mix, or the training mix's sources that have a target."""
    if sft_cfg.mix is None:
        mix = {n: w for n, w in plan.mix.items() if _has_target(plan.sources[n])}
        if not mix:
            raise ConfigError("stage.sft.mix", f"no source of data.mix {list(plan.mix)} has an SFT target "
                              "(fields.target); name SFT sources in stage.sft.mix")
        return mix
    mix = OmegaConf.to_container(sft_cfg.mix)
    if not isinstance(mix, dict) or not mix:
        raise ConfigError("stage.sft.mix", f"expected a mapping source -> weight, got {mix!r}")
    for name, weight in mix.items():
        if name not in plan.sources:
            raise ConfigError(f"stage.sft.mix.{name}", f"no such source; the sources are {sorted(plan.sources)}")
        if not _has_target(plan.sources[name]):
            raise ConfigError(f"stage.sft.mix.{name}", "this source has no SFT target: set its fields.target "
                              "(the reasoning column) or target.format: plain")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"stage.sft.mix.{name}", f"expected a weight >= 0, got {weight!r}")
    mix = {n: w for n, w in mix.items() if w > 0}  # 0 leaves a source out, as in data.mix
    if not mix:
        raise ConfigError("stage.sft.mix", "every weight is 0")
    total = sum(mix.values())
    return {n: w / total for n, w in mix.items()}


def _has_target(spec) -> bool:
    return bool(spec.fields.get("target")) or (spec.raw.get("target") or {}).get("format") == "plain"


def _example(columns: dict, i: int, spec, prompt_format: PromptFormat, max_words: int | None,
             context: str) -> tuple[list[dict], str]:
    from medgrpo.data.render import render_user

    target = spec.raw.get("target") or {}
    user = {"role": "user", "content": render_user(spec.template, columns["question"][i], context,
                                                   columns["choices"][i])}
    if target.get("format") == "plain":
        return [user], columns["answer"][i]
    reasoning = clean_reasoning(columns["target"][i] or "", target, max_words)
    return ([{"role": "system", "content": prompt_format.system}, user],
            render_target(reasoning, columns["answer"][i], prompt_format))


def _length(tokenizer, prompt: list[dict], completion: str) -> int:
    text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": completion}], tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_example(columns: dict, i: int, spec, prompt_format: PromptFormat, tokenizer, max_length: int | None,
                max_words: int | None) -> tuple[list[dict], str, str] | None:
    """(prompt, completion, how) with prompt + completion within max_length tokens; how is "whole" or
    "context_cut"; None when it cannot fit (no context to shorten, or not even the question fits)."""
    context = columns["context"][i]
    prompt, completion = _example(columns, i, spec, prompt_format, max_words, context)
    if max_length is None:
        return prompt, completion, "whole"
    excess = _length(tokenizer, prompt, completion) - max_length
    if excess <= 0:
        return prompt, completion, "whole"
    if not context:
        return None
    ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    keep = len(ids) - excess - CONTEXT_MARGIN
    if keep <= 0:
        return None
    prompt, completion = _example(columns, i, spec, prompt_format, max_words, tokenizer.decode(ids[:keep]) + " ...")
    return (prompt, completion, "context_cut") if _length(tokenizer, prompt, completion) <= max_length else None


def prepare_sft(sft_cfg: DictConfig, data_cfg, tokenizer, prompt_format: PromptFormat,
                seed: int) -> tuple[Dataset, dict]:
    """The SFT mix as TRL prompt/completion rows (conversational) and a report per source. The pools are checked
    for leakage against the evaluation sets like the GRPO mix."""
    from medgrpo.data.mix import mix_sources
    from medgrpo.data.prepare import _check_pool_leakage, load_normalized
    plan = sft_plan(sft_cfg, data_cfg)
    mix = plan.mix
    max_length = sft_cfg.trainer.get("max_length")
    max_words = sft_cfg.max_reasoning_words
    columns, pools, report = {}, {}, {}
    for name in mix:
        columns[name], entry = load_normalized(plan.sources[name], seed, plan.max_bad_row_fraction)
        rows, counts = [], {"whole": 0, "context_cut": 0, "dropped_too_long": 0}
        for i in range(len(columns[name]["id"])):
            fitted = fit_example(columns[name], i, plan.sources[name], prompt_format, tokenizer, max_length, max_words)
            if fitted is None:
                counts["dropped_too_long"] += 1
                continue
            rows.append({"prompt": fitted[0], "completion": [{"role": "assistant", "content": fitted[1]}],
                         "source": name})
            counts[fitted[2]] += 1
        if not rows:
            raise ConfigError("stage.sft.trainer.max_length", f"no example of source '{name}' fits in {max_length} "
                              "tokens; raise it")
        pools[name] = Dataset.from_list(rows).shuffle(seed=seed)
        report[name] = {"loaded": entry["loaded"], "weight": round(mix[name], 6), **counts}
        log.info("SFT source %s: %d examples (%d with the context shortened to fit %s tokens, %d dropped)", name,
                 len(rows), counts["context_cut"], max_length, counts["dropped_too_long"])
        if counts["context_cut"] > len(rows) / 2:
            # Measured (conf/stage/sft/tiny.yaml): a model that only saw cut contexts failed on whole ones.
            log.warning("SFT source %s: %d of %d contexts were shortened to fit stage.sft.trainer.max_length=%s, "
                        "but evaluation prompts are whole: raise it if you can", name, counts["context_cut"],
                        len(rows), max_length)
    orders = {n: list(range(len(columns[n]["id"]))) for n in mix}
    leakage = _check_pool_leakage(plan, columns, orders)
    mixed, effective = mix_sources(pools, mix, seed, plan.stopping_strategy, None)
    report = {"sources": report, "mixed": effective, "leakage": leakage, "max_length": max_length}
    return mixed.remove_columns("source"), report


def sft_settings(trainer_cfg: DictConfig, *, seed: int, output_dir: Path, report_to: list[str]) -> dict:
    """trl.SFTConfig keyword arguments: the stage.sft.trainer group plus what the job decides. SFTConfig defaults
    to bf16 and gradient checkpointing; on CPU bf16 is off here (gradient checkpointing is the config's)."""
    on_cuda = torch.cuda.is_available()
    settings = OmegaConf.to_container(trainer_cfg, resolve=True)
    settings.update(output_dir=str(output_dir / "sft_checkpoints"), seed=seed, data_seed=seed, report_to=report_to,
                    run_name=f"{output_dir.name}-sft", use_cpu=not on_cuda,
                    bf16=on_cuda and torch.cuda.is_bf16_supported(),
                    fp16=on_cuda and not torch.cuda.is_bf16_supported(),
                    completion_only_loss=True, save_strategy="no")
    return settings


def check_sft_trainer(trainer_cfg: DictConfig) -> None:
    from trl import SFTConfig

    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    for key in trainer_cfg:
        if key not in fields:
            raise ConfigError(f"stage.sft.trainer.{key}", "not a field of trl.SFTConfig (check the spelling)")


def train_sft(sft_cfg: DictConfig, policy, dataset: Dataset, save_dir: Path, output_dir: Path,
              report_to: list[str]) -> dict[str, float]:
    """Train `policy.model` in place with SFTTrainer; save its weights (adapter, or full model) to save_dir."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**sft_settings(sft_cfg.trainer, seed=sft_cfg.seed, output_dir=output_dir, report_to=report_to))
    trainer = SFTTrainer(model=policy.model, args=args, train_dataset=dataset, processing_class=policy.tokenizer)
    log.info("SFT: %s steps of %d examples, lr %g, %d examples in the mix", args.max_steps,
             args.per_device_train_batch_size * args.gradient_accumulation_steps, args.learning_rate, len(dataset))
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    trainer.save_model(str(save_dir))
    history = trainer.state.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    tokens = next((e["num_tokens"] for e in reversed(history) if "num_tokens" in e), None)
    metrics = {"train_sft/steps": float(trainer.state.global_step), "train_sft/seconds": seconds}
    if losses:
        metrics.update({"train_sft/loss_first": float(losses[0]), "train_sft/loss_last": float(losses[-1])})
    if tokens:
        metrics["train_sft/tokens_per_second"] = float(tokens) / seconds
    return metrics


def load_sft_weights(policy, weights_dir: Path) -> None:
    """Put cached SFT weights into the live model: the adapter's into the PEFT model, or the whole model's."""
    from safetensors.torch import load_file

    if (weights_dir / "adapter_model.safetensors").is_file():
        from peft import PeftConfig, get_peft_model, set_peft_model_state_dict

        config = PeftConfig.from_pretrained(str(weights_dir))
        if getattr(config, "prefix_projection", False):
            # PEFT saves prefix tuning's prefix as the MLP's output, not the MLP: training goes on from that prefix
            # directly (as P-Tuning v2 does). A prompt-learning adapter leaves the base model untouched.
            config.prefix_projection, config.inference_mode = False, False
            policy.model = get_peft_model(policy.model.base_model, config)
        set_peft_model_state_dict(policy.model, load_file(str(weights_dir / "adapter_model.safetensors")))
        return
    state = {}
    for shard in sorted(weights_dir.glob("model*.safetensors")):
        state.update(load_file(str(shard)))
    missing, unexpected = policy.model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(policy.model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"cached SFT weights in {weights_dir} do not fit the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")


def sft_cache_key(sft_cfg: DictConfig, data_cfg, lora, model_path: str, prompt_format: PromptFormat,
                  tokenizer) -> str:
    from medgrpo.data.cache import cache_key
    plan = sft_plan(sft_cfg, data_cfg)
    mix = plan.mix
    sources = {n: plan.sources[n] for n in mix}
    settings = OmegaConf.to_container(sft_cfg, resolve=True)
    settings.pop("cache", None)
    model_files = [p for p in Path(model_path).glob("*.json")] if Path(model_path).is_dir() else []
    payload = {"sft": settings, "mix": mix, "sources": {n: s.raw for n, s in sources.items()},
               "model": model_path, "lora": dataclasses.asdict(lora),
               "prompt": [prompt_format.system, prompt_format.think_tag]}
    files = [p for s in sources.values() for p in s.local_files] + model_files
    return cache_key("sft", payload, files, tokenizer)


def run_sft(sft_cfg: DictConfig, data_cfg, policy, prompt_format: PromptFormat, lora, cache_root: Path,
            output_dir: Path, report_to: list[str]) -> tuple[dict[str, float], dict]:
    """SFT for this job: from the cache when an identical setting already ran (the lock makes parallel jobs of a
    sweep wait for the first), else trained here and cached. Returns (train_sft/... metrics, report)."""
    from filelock import FileLock

    if not sft_cfg.cache:
        dataset, report = prepare_sft(sft_cfg, data_cfg, policy.tokenizer, prompt_format, sft_cfg.seed)
        metrics = train_sft(sft_cfg, policy, dataset, output_dir / "sft", output_dir, report_to)
        return metrics, {"data": report, "weights": str(output_dir / "sft"), "cache": "off"}
    key = sft_cache_key(sft_cfg, data_cfg, lora, policy.model_path, prompt_format, policy.tokenizer)
    cached = cache_root / key
    cached.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cached) + ".lock"):
        if (cached / DONE).is_file():
            done = json.loads((cached / DONE).read_text())
            load_sft_weights(policy, cached)
            log.info("SFT weights from the cache %s (trained by an identical SFT setting)", cached)
            return {**done["metrics"], "train_sft/cache_hit": 1.0}, {**done["report"], "weights": str(cached),
                                                                     "cache": "hit", "cache_key": key}
        dataset, report = prepare_sft(sft_cfg, data_cfg, policy.tokenizer, prompt_format, sft_cfg.seed)
        staging = Path(tempfile.mkdtemp(prefix=".sft-", dir=cached.parent))
        try:
            metrics = train_sft(sft_cfg, policy, dataset, staging, output_dir, report_to)
            write_json_atomic(staging / DONE, {"metrics": metrics, "report": {"data": report}})
            staging.replace(cached)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {**metrics, "train_sft/cache_hit": 0.0}, {"data": report, "weights": str(cached), "cache": "miss",
                                                     "cache_key": key}
