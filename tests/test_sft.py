"""SFT stage pieces: targets in the prompt format, context (never answer) truncation, source checks, the Chinese
dialogue source, stage choices, PEFT method refusals; and every PEFT method trains, saves and reloads."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from medgrpo import rewards
from medgrpo.backends import LoraSpec, load_policy, resolve_backend
from medgrpo.config import compose_config
from medgrpo.data.prepare import load_normalized
from medgrpo.data.spec import parse_source, root_dir, validate_data_config
from medgrpo.errors import ConfigError
from medgrpo.prompting import PromptFormat
from medgrpo.sft import (clean_reasoning, fit_example, job_stages, load_sft_weights, prepare_sft, render_target,
                         sft_cache_key, sft_mix, train_sft)

ROOT = Path(__file__).resolve().parents[1]
XML = PromptFormat(system="Respond in the format", think_tag="reasoning")
THINK = PromptFormat(system="Think in <think> tags", think_tag="think")
DIALOGUE = "+data/sources@data.sources.chinese_medical_dialogue=chinese_medical_dialogue"


def config(*overrides, tmp_path):
    return compose_config("preset=tiny", *overrides, output_dir=tmp_path)


@pytest.mark.parametrize("prompt_format", [XML, THINK])
def test_a_target_is_exactly_the_layout_the_strict_format_reward_pays_for(prompt_format):
    target = render_target("Vaccines were stored too warm.", "no", prompt_format)
    paid = rewards.strict_format(None, [target], think_tag=prompt_format.think_tag)
    assert paid == [rewards.FORMAT_REWARD]
    assert target.startswith(prompt_format.think_open) and target.endswith("<answer>\nno\n</answer>")


def test_gsm8k_reasoning_stops_at_the_final_answer_without_calculator_notes():
    solution = "He gave 40 away: 180-40= <<180-40=140>>140 shells.\nHalf of them: 140/2 = <<140/2=70>>70\n#### 70"
    gsm8k = {"until": "####", "remove": "<<[^>]*>>"}
    assert clean_reasoning(solution, gsm8k, None) == "He gave 40 away: 180-40= 140 shells. Half of them: 140/2 = 70"
    assert clean_reasoning(solution, gsm8k, 3) == "He gave 40"


def test_a_long_example_loses_context_never_its_answer(tmp_path, tiny_tokenizer):
    cfg = config(tmp_path=tmp_path)
    spec = parse_source("pubmedqa_labeled_pool", cfg.data.sources.pubmedqa_labeled_pool, root_dir(cfg.data))
    columns, _ = load_normalized(spec, 0, 0.01)
    whole = fit_example(columns, 0, spec, XML, tiny_tokenizer, None, 25)
    prompt, completion, how = fit_example(columns, 0, spec, XML, tiny_tokenizer, 200, 25)
    assert how == "context_cut" and completion == whole[1] and completion.endswith(f"{columns['answer'][0]}\n</answer>")
    assert columns["question"][0] in prompt[-1]["content"] and len(prompt[-1]["content"]) < len(whole[0][-1]["content"])
    text = tiny_tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": completion}], tokenize=False)
    assert len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"]) <= 200
    assert fit_example(columns, 0, spec, XML, tiny_tokenizer, 20, 25) is None  # not even the question fits


def token_count(tokenizer, prompt, completion) -> int:
    """prompt + completion as the trainer sees them, counted by the tokenizer itself."""
    text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": completion}], tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_an_example_that_fits_exactly_is_whole_and_one_token_less_cuts_its_context(tmp_path, tiny_tokenizer):
    cfg = config(tmp_path=tmp_path)
    spec = parse_source("pubmedqa_labeled_pool", cfg.data.sources.pubmedqa_labeled_pool, root_dir(cfg.data))
    columns, _ = load_normalized(spec, 0, 0.01)
    whole = fit_example(columns, 0, spec, XML, tiny_tokenizer, None, 25)
    exact = token_count(tiny_tokenizer, whole[0], whole[1])
    assert fit_example(columns, 0, spec, XML, tiny_tokenizer, exact, 25) == whole
    prompt, completion, how = fit_example(columns, 0, spec, XML, tiny_tokenizer, exact - 1, 25)
    assert how == "context_cut" and completion == whole[1] and token_count(tiny_tokenizer, prompt, completion) < exact
    assert prompt[-1]["content"] != whole[0][-1]["content"] and " ..." in prompt[-1]["content"]


def test_a_max_length_that_cuts_shortens_contexts_and_counts_them(tmp_path, tiny_tokenizer):
    """stage.sft.trainer.max_length reaches the data: at 300 tokens every row fits in 300 (counted here by the
    tokenizer), some contexts are cut, and the report accounts for every loaded item; at 100000 none is cut."""
    cfg = config(tmp_path=tmp_path)

    def prepared(max_length: int):
        cfg.stage.sft.trainer.max_length = max_length
        rows, report = prepare_sft(cfg.stage.sft, cfg.data, tiny_tokenizer, XML, seed=0)
        return rows, report["sources"]["pubmedqa_labeled_pool"], report["max_length"]

    rows, counts, recorded = prepared(300)
    assert counts["loaded"] == 150 and counts["whole"] + counts["context_cut"] + counts["dropped_too_long"] == 150
    assert counts["context_cut"] > 0 and recorded == 300 and len(rows) == counts["whole"] + counts["context_cut"]
    assert max(token_count(tiny_tokenizer, r["prompt"], r["completion"][0]["content"]) for r in rows) <= 300
    _, counts, _ = prepared(100_000)
    assert (counts["whole"], counts["context_cut"], counts["dropped_too_long"]) == (150, 0, 0)
    with pytest.raises(ConfigError, match=r"stage.sft.trainer.max_length.*pubmedqa_labeled_pool.*fits in 20"):
        prepared(20)  # not even a question fits


def test_the_sft_cache_key_holds_everything_that_shapes_the_weights(tmp_path, tiny_tokenizer):
    """A sweep's jobs share SFT weights only when their SFT settings are the same (stage.sft.seed is ${seed} by
    default; fixed here, as a sweep over GRPO seeds fixes it)."""
    base = config("stage.sft.seed=0", tmp_path=tmp_path)

    def key(changes=(), model_path="tiny", prompt_format=XML):
        cfg = base.copy()
        with open_dict(cfg):
            for dotted, value in changes:
                OmegaConf.update(cfg, dotted, value, merge=False)
        return sft_cache_key(cfg.stage.sft, cfg.data, LoraSpec.from_config(cfg.lora), model_path, prompt_format,
                             tiny_tokenizer)

    reference = key()
    for changes in ([("stage.sft.seed", 1)],                      # another SFT seed: other weights
                    [("lora.rank", 4)], [("lora.alpha", 8)],      # another adapter
                    [("lora.method", "dora")],                     # another PEFT method
                    [("stage.sft.trainer.max_length", 512)], [("stage.sft.max_reasoning_words", 10)],
                    [("stage.sft.trainer.learning_rate", 1e-3)], [("stage.sft.mix", {"gsm8k_train": 1.0})]):
        assert key(changes) != reference, changes
    assert key(model_path="other") != reference and key(prompt_format=THINK) != reference
    assert key(prompt_format=PromptFormat(system="Another system prompt", think_tag="reasoning")) != reference
    for changes in ([("seed", 7)],                                 # a GRPO seed, with stage.sft.seed fixed
                    [("grpo.learning_rate", 1e-3), ("grpo.max_steps", 3)],
                    [("stage.sft.cache", False)]):                 # whether to cache is no part of what is cached
        assert key(changes) == reference, changes


def test_the_sft_cache_key_follows_the_contents_of_the_sources_files(tmp_path, tiny_tokenizer):
    pool = tmp_path / "pool.jsonl"
    original = (ROOT / "data/samples/pubmedqa/pqa_labeled_pool.jsonl").read_text(encoding="utf-8")
    pool.write_text(original, encoding="utf-8")
    cfg = config("stage.sft.seed=0", f"data.sources.pubmedqa_labeled_pool.local.path={pool}", tmp_path=tmp_path)

    def key():
        return sft_cache_key(cfg.stage.sft, cfg.data, LoraSpec.from_config(cfg.lora), "tiny", XML, tiny_tokenizer)
    before = key()
    pool.write_text(original.replace("yes", "no", 1), encoding="utf-8")  # one label changed
    assert key() != before


def test_sft_sources_need_a_target(tmp_path):
    plan = validate_data_config(config(tmp_path=tmp_path).data)
    assert sft_mix(config(tmp_path=tmp_path).stage.sft, plan) == {"pubmedqa_labeled_pool": 1.0}
    cfg = config("+stage.sft.mix.mmlu_medical=1", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match=r"stage.sft.mix.mmlu_medical.*no SFT target"):
        sft_mix(cfg.stage.sft, plan)
    with pytest.raises(ConfigError, match=r"stage.sft.mix.nope.*no such source"):
        sft_mix(config("+stage.sft.mix.nope=1", tmp_path=tmp_path).stage.sft, plan)


def test_chinese_dialogues_from_gb18030_are_plain_chat_turns(tmp_path, tiny_tokenizer):
    cfg = config(DIALOGUE, "+stage.sft.mix.chinese_medical_dialogue=1", "stage.sft.mix.pubmedqa_labeled_pool=0",
                 "stage.sft.trainer.max_length=2048", tmp_path=tmp_path)  # Chinese is ~3 byte-level tokens a character
    rows, report = prepare_sft(cfg.stage.sft, cfg.data, tiny_tokenizer, XML, seed=0)
    assert report["sources"]["chinese_medical_dialogue"]["loaded"] == 40 and len(rows) == 40
    first = next(r for r in rows if "党参" in r["prompt"][0]["content"])
    assert [m["role"] for m in first["prompt"]] == ["user"]  # no format system prompt for a plain dialogue
    assert first["prompt"][0]["content"].startswith("高血压患者能吃党参吗？\n我有高血压")
    assert first["completion"][0]["content"].startswith("高血压病人可以口服党参的。")
    assert "<answer>" not in first["completion"][0]["content"]


def test_stage_choices_and_their_order(tmp_path):
    assert job_stages(config("stage=sft_grpo", tmp_path=tmp_path).stage, True) == ["sft", "grpo"]
    assert job_stages(config("stage=sft", tmp_path=tmp_path).stage, True) == ["sft"]
    assert job_stages(config(tmp_path=tmp_path).stage, False) == []  # evaluation only
    with pytest.raises(ConfigError, match="stage.stages"):
        job_stages(config("stage.stages=[grpo,sft]", tmp_path=tmp_path).stage, True)


@pytest.mark.parametrize(("overrides", "named"), [
    (("lora=prefix", "backend=unsloth"), "lora.method=prefix with backend.fast_inference=true"),
    (("lora=ptuning", "backend=unsloth", "backend.fast_inference=false"), "lora.method=ptuning with backend=unsloth"),
    (("lora=dora", "backend=unsloth"), "lora.method=dora with backend.fast_inference=true"),
])
def test_impossible_peft_combinations_are_refused_naming_both_keys(tmp_path, overrides, named):
    cfg = compose_config(*overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError, match=named):
        resolve_backend(cfg.backend, LoraSpec.from_config(cfg.lora))


def test_full_fine_tuning_of_4bit_weights_is_refused(tmp_path):
    cfg = compose_config("lora=full", "lora.load_in_4bit=true", output_dir=tmp_path)
    with pytest.raises(ConfigError, match="lora.method=full with lora.load_in_4bit=true"):
        LoraSpec.from_config(cfg.lora)


@pytest.mark.slow
@pytest.mark.parametrize("option", ["tiny", "dora", "prefix", "ptuning", "full"])  # lora=tiny: LoRA on the tiny model
def test_every_peft_method_trains_saves_and_reloads(tmp_path, tiny_model_dir, option):
    """Two SFT steps, saved; the weights reloaded into a fresh model (as the SFT cache and evaluation do) give the
    same logits as the trained model, and differ from the untrained one."""
    cfg = config(f"lora={option}", "lora.load_in_4bit=false", "stage.sft.trainer.max_steps=2",
                 "stage.sft.trainer.per_device_train_batch_size=2", "stage.sft.trainer.learning_rate=1e-2",
                 tmp_path=tmp_path)
    with open_dict(cfg):
        cfg.model.name_or_path = str(tiny_model_dir.parent)
    spec = LoraSpec.from_config(cfg.lora)
    policy = load_policy("hf", cfg.model, spec)
    rows, _ = prepare_sft(cfg.stage.sft, cfg.data, policy.tokenizer, XML, seed=0)
    probe = policy.tokenizer("<reasoning>\nThe", return_tensors="pt")

    def logits(model):
        with torch.no_grad():
            return model.eval()(**probe).logits

    before = logits(policy.model)
    metrics = train_sft(cfg.stage.sft, policy, rows.select(range(8)), tmp_path / "weights", tmp_path, report_to=[])
    assert metrics["train_sft/steps"] == 2
    saved = "adapter_config.json" if option != "full" else "config.json"
    assert (tmp_path / "weights" / saved).is_file()
    reloaded = load_policy("hf", cfg.model, spec)
    load_sft_weights(reloaded, tmp_path / "weights")
    assert torch.allclose(logits(reloaded.model), logits(policy.model), atol=1e-5)
    assert not torch.allclose(logits(policy.model), before, atol=1e-4)
