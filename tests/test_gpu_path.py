"""The GPU path's defects found by reading Unsloth 2026.10.9, vLLM 0.31 and TRL 1.14, each checked on CPU.

Unsloth cannot run here (vLLM runs for real on CPU in tests/test_vllm_cpu.py, `make test-vllm`). Where a test needs
them it uses a FAKE of their API that only records the arguments it is given (argument plumbing): it checks what our
code asks of the libraries, never what they do.
"""
from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field, replace
from importlib.util import find_spec
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medgrpo.backends import LoraSpec, Policy, load_policy, vllm_engines
from medgrpo.errors import ConfigError
from medgrpo.evaluation.budget import Budget
from medgrpo.evaluation.engine import Sampling, VLLMEngine, check_engine_request, choose_engine, has_vllm_engine
from tests._fake_unsloth import STOP, cuda_driver, fake_unsloth_package, imported_before_unsloth
from tests._run import run_entrypoint

# ---- fakes (argument plumbing only) -------------------------------------------------------------------------------


@dataclass
class FakeCompletion:  # the fields of vllm.outputs.CompletionOutput our engine reads
    token_ids: list[int]
    finish_reason: str
    stop_reason: int | str | None


class FakeVLLMModel:
    """A model as Unsloth returns it with fast_inference=True: vllm_engine, load_lora, fast_generate."""

    def __init__(self, completions):
        self.vllm_engine = object()
        self.generation_config = types.SimpleNamespace(eos_token_id=[7, 8])  # Qwen2.5: <|im_end|>, <|endoftext|>
        self.completions = completions
        self.calls: list[dict] = []
        self.loaded: list[str] = []
        self.saved: list[str] = []

    def load_lora(self, directory):
        self.loaded.append(directory)
        return f"request-{len(self.loaded)}"

    def save_pretrained(self, directory):
        self.saved.append(directory)

    def fast_generate(self, prompts, sampling_params, lora_request, use_tqdm):
        self.calls.append({"params": sampling_params, "lora_request": lora_request})
        return [types.SimpleNamespace(outputs=[c]) for c in self.completions[:len(prompts)]]


@pytest.fixture
def fake_vllm(monkeypatch):
    """`vllm.SamplingParams` that keeps its keyword arguments."""
    module = types.ModuleType("vllm")
    module.SamplingParams = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", module)


TOKENIZER = types.SimpleNamespace(eos_token_id=7)

# ---- 7. a second EOS id --------------------------------------------------------------------------------------------


def unsloth_policy(model, model_path=None):
    """A Policy as the unsloth backend returns it with fast_inference=True."""
    return Policy(model=model, tokenizer=TOKENIZER, backend="unsloth", model_path=model_path, vllm=model.vllm_engine)


def test_vllm_engine_stops_at_every_eos_id_and_counts_the_second_as_an_end(fake_vllm, tmp_path):
    model = FakeVLLMModel([FakeCompletion([5, 6, 8], "stop", 8),          # the second EOS: vLLM's stop_reason is 8
                           FakeCompletion([5, 7], "stop", None),          # the tokenizer's EOS
                           FakeCompletion([5, 9], "stop", "</think>"),    # a stop string
                           FakeCompletion([5, 6], "length", None),        # the token limit
                           FakeCompletion([5, 4], "stop", 4)])            # an id vLLM stopped at on its own
    # Unsloth rebuilds the model from config.json alone: its generation config lacks the second id, which only the
    # model folder's generation_config.json lists (vLLM reads that file itself).
    model.generation_config = types.SimpleNamespace(eos_token_id=7)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 8]}))
    engine = VLLMEngine(unsloth_policy(model, str(tmp_path)))
    out = engine.generate([[1]] * 5, 16, ["</think>"], Sampling())
    assert sorted(model.calls[0]["params"]["stop_token_ids"]) == [7, 8]
    assert [(g.tokens, g.ended) for g in out] == [([5, 6], True), ([5], True), ([5, 9], False), ([5, 6], False),
                                                  ([5], True)]

# ---- minor: the LoRA is loaded once, not on every generate call; 6. never a stale adapter from disk ----------------


def test_vllm_engine_saves_the_current_lora_once_and_requests_it_for_all_its_generate_calls(fake_vllm):
    model = FakeVLLMModel([FakeCompletion([5], "length", None)])
    engine = VLLMEngine(unsloth_policy(model))
    for _ in range(3):  # budget forcing: a thinking round, an extension, the answer
        engine.generate([[1]], 4, [], Sampling())
    # the weights the model holds now, saved for vLLM: never <job>/adapter, which may be an earlier run's
    assert len(model.saved) == 1 and model.loaded == model.saved
    assert [call["lora_request"] for call in model.calls] == ["request-1"] * 3

# ---- 8. the engine follows the loaded model; eval.engine=vllm checked before loading --------------------------------


def test_the_engine_follows_what_the_loaded_model_supports():
    with_vllm = unsloth_policy(FakeVLLMModel([]))
    without = Policy(model=types.SimpleNamespace(), tokenizer=TOKENIZER, backend="unsloth", model_path="m")
    assert has_vllm_engine(with_vllm) and not has_vllm_engine(without)  # Unsloth fell back: no vLLM
    assert choose_engine("auto", with_vllm) == "vllm" and choose_engine("auto", without) == "hf"
    assert choose_engine("hf", with_vllm) == "hf"
    with pytest.raises(ConfigError, match="eval.engine.*no vLLM engine"):
        choose_engine("vllm", without)


def test_eval_engine_vllm_on_unsloth_without_its_engine_is_refused_before_loading():
    assert check_engine_request("vllm", "unsloth", backend_cfg(), LORA, None, MODEL, "m") is False  # Unsloth's own
    assert check_engine_request("auto", "hf", backend_cfg(), LORA, None, MODEL, "m") is False  # auto: transformers
    with pytest.raises(ConfigError, match="eval.engine.*fast_inference"):
        check_engine_request("vllm", "unsloth", backend_cfg(fast_inference=False), LORA, None, MODEL, "m")


@pytest.mark.slow
@pytest.mark.gpu_path
def test_eval_engine_vllm_on_cpu_fails_in_one_line_before_the_model_loads(tmp_path, model_cache):
    done = run_entrypoint("preset=tiny", "eval.engine=vllm", "train.enabled=false", "logger=disabled",
                          f"hydra.run.dir={tmp_path / 'job'}", cache=model_cache, env={"HYDRA_FULL_ERROR": "0"})
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    # without vLLM (.venv): that; with it (.venv-vllm): preset=tiny's adapter targets lm_head, which vLLM cannot apply
    expected = "'eval.engine': needs vLLM" if find_spec("vllm") is None else "'lora.target_modules'"
    assert expected in output and "Traceback" not in output
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["status"] == "failed" and "model_load_s" not in results["timings"]

# ---- 5. budget forcing cannot pass model.max_seq_length on vLLM ----------------------------------------------------


class WordTokenizer:
    """One token per whitespace-separated word; a chat template that joins the messages."""

    def encode(self, text, add_special_tokens=False):
        return text.split()

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return " ".join(m["content"] for m in messages) + " assistant:"

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_budget_forcing_that_could_pass_max_seq_length_is_refused_before_loading():
    extend = Budget(mode="extend", max_thinking_tokens=100, max_answer_tokens=20, num_ignore=2,
                    answer_prefix=" <answer>")
    eval_sets = {"pubmedqa": [{"prompt": [{"role": "user", "content": " ".join(["word"] * 29)}]}]}  # 30 tokens
    # The longest completion: 100 thinking + 2 appended ("</think> <answer>") + 20 answer = 122 tokens.
    assert extend.max_completion_tokens(WordTokenizer(), "</think>") == 122
    extend.check_fits(WordTokenizer(), "</think>", eval_sets, max_seq_length=152)
    with pytest.raises(ConfigError, match=r"budget.max_thinking_tokens.*pubmedqa prompt \(30 tokens\).*122 tokens"):
        extend.check_fits(WordTokenizer(), "</think>", eval_sets, max_seq_length=151)
    with pytest.raises(ConfigError, match="eval.max_new_tokens"):
        Budget(mode="off", max_new_tokens=200).check_fits(WordTokenizer(), "</think>", eval_sets, 151)

# ---- 2, 3, minor: Unsloth loading (a fake FastLanguageModel: argument plumbing only) ------------------------------


class FakeEngine:
    """A vllm.LLM's shutdown path (llm_engine.engine_core.shutdown), recorded in `shut_down`."""

    shut_down: list[str] = []

    def __init__(self, name):
        self.name = name
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(model=name),
                                                engine_core=types.SimpleNamespace(shutdown=self._shutdown))

    def _shutdown(self):
        FakeEngine.shut_down.append(self.name)

    def __repr__(self):
        return self.name


@dataclass
class FakeFastLanguageModel:
    calls: list = field(default_factory=list)

    def from_pretrained(self, **kwargs):
        self.calls.append(("from_pretrained", kwargs))
        model = types.SimpleNamespace(vllm_engine=FakeEngine(f"engine-{len(self.calls)}")) \
            if kwargs["fast_inference"] else types.SimpleNamespace()
        return model, types.SimpleNamespace(pad_token=None, eos_token="<eos>", padding_side="right")

    def get_peft_model(self, model, **kwargs):
        self.calls.append(("get_peft_model", kwargs))
        return model

    def for_inference(self, model):
        self.calls.append(("for_inference", {}))


@pytest.fixture
def fake_unsloth(monkeypatch):
    from medgrpo.backends import unsloth as backend

    fast = FakeFastLanguageModel()
    deleted: list = []
    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=fast))
    monkeypatch.setitem(sys.modules, "unsloth_zoo", types.ModuleType("unsloth_zoo"))
    monkeypatch.setitem(sys.modules, "unsloth_zoo.vllm_utils",
                        types.SimpleNamespace(delete_vllm=lambda llm: deleted.append(llm.name)))
    monkeypatch.setattr(vllm_engines, "_engines", [])
    monkeypatch.setattr(FakeEngine, "shut_down", [])
    monkeypatch.setenv(backend.STANDBY_ENV, "0")
    return backend, fast, deleted


MODEL = OmegaConf.create({"max_seq_length": 512, "trust_remote_code": False})
LORA = LoraSpec.from_config(OmegaConf.create({"rank": 16, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj"],
                                              "load_in_4bit": True}))


def backend_cfg(fast_inference=True, standby=False):
    return OmegaConf.create({"fast_inference": fast_inference, "gpu_memory_utilization": 0.5, "standby": standby})


def test_a_saved_adapter_is_loaded_by_unsloth_itself_not_by_plain_peft(fake_unsloth, tmp_path):
    backend, fast, _ = fake_unsloth
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base-4bit", "r": 64}))
    policy = backend.load_unsloth_policy(MODEL, LORA, backend_cfg(), "org/base", tmp_path, trainable=False, seed=0)
    (name, kwargs), *rest = fast.calls
    assert name == "from_pretrained" and kwargs["model_name"] == str(tmp_path)  # Unsloth attaches load_lora itself
    assert kwargs["max_lora_rank"] == 64  # the adapter's rank, above lora.rank=16: vLLM refuses larger adapters
    assert [call[0] for call in rest] == ["for_inference"]  # evaluation only; no new LoRA on top
    assert policy.model_path == "org/base-4bit"


def test_training_from_a_saved_adapter_keeps_it_trainable_without_a_second_lora(fake_unsloth, tmp_path):
    backend, fast, _ = fake_unsloth
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base", "r": 8}))
    backend.load_unsloth_policy(MODEL, LORA, backend_cfg(), "org/base", tmp_path, trainable=True, seed=0)
    assert [call[0] for call in fast.calls] == ["from_pretrained"]
    assert fast.calls[0][1]["max_lora_rank"] == 16


def test_a_new_job_in_the_same_process_frees_the_previous_jobs_vllm_engine_whatever_its_backend(fake_unsloth,
                                                                                               tiny_model_dir):
    _, _, deleted = fake_unsloth
    load_policy("unsloth", MODEL, LORA, backend_cfg=backend_cfg(), model_path="org/base")
    assert deleted == [] and vllm_engines.live_engines() == 1
    load_policy("unsloth", MODEL, LORA, backend_cfg=backend_cfg(), model_path="org/base")  # calls: load, lora, load
    # shut down first (vLLM's EngineCore.shutdown undoes its gc.freeze()), then Unsloth's own clean-up
    assert FakeEngine.shut_down == deleted == ["engine-1"] and vllm_engines.live_engines() == 1
    hf_model = OmegaConf.create({"name_or_path": str(tiny_model_dir), "builder": None, "dtype": "float32",
                                 "trust_remote_code": False, "max_seq_length": 512})
    load_policy("hf", hf_model, replace(LORA, load_in_4bit=False))  # a sweep: unsloth, then hf
    assert FakeEngine.shut_down == deleted == ["engine-1", "engine-3"] and vllm_engines.live_engines() == 0


FULL = LoraSpec.from_config(OmegaConf.create({"method": "full", "rank": 64, "alpha": 64, "dropout": 0.0,
                                              "target_modules": ["q_proj"], "load_in_4bit": False}))


def test_full_fine_tuning_under_unsloth_trains_the_whole_model_not_a_lora(fake_unsloth):
    backend, fast, _ = fake_unsloth
    backend.load_unsloth_policy(MODEL, FULL, backend_cfg(fast_inference=False), "org/base", None, trainable=True,
                                seed=0)
    assert [name for name, _ in fast.calls] == ["from_pretrained"]  # no rank-64 LoRA on top
    assert fast.calls[0][1]["full_finetuning"] is True  # unsloth/models/loader.py:1248
    fast.calls.clear()
    backend.load_unsloth_policy(MODEL, LORA, backend_cfg(), "org/base", None, trainable=True, seed=0)
    assert [(name, kwargs.get("full_finetuning")) for name, kwargs in fast.calls] == [
        ("from_pretrained", False), ("get_peft_model", None)]


def test_a_full_fine_tuned_model_is_evaluated_from_its_own_folder(fake_unsloth, tmp_path):
    backend, fast, _ = fake_unsloth
    (tmp_path / "config.json").write_text("{}")  # lora.method=full saves the whole model: no adapter_config.json
    backend.load_unsloth_policy(MODEL, FULL, backend_cfg(fast_inference=False), "org/base", tmp_path,
                                trainable=False, seed=0)
    assert [name for name, _ in fast.calls] == ["from_pretrained", "for_inference"]
    assert fast.calls[0][1]["model_name"] == str(tmp_path)


@pytest.mark.parametrize("name", ["unsloth", "auto"])
def test_full_fine_tuning_with_vllm_is_refused_before_the_model_loads(name, monkeypatch):
    """Unsloth raises NotImplementedError for full_finetuning with fast_inference (unsloth/models/vision.py:4327),
    after loading the weights. backend=auto is Unsloth on a GPU machine with unsloth installed: this CPU machine is
    told it has both (machine probes only)."""
    from importlib.machinery import ModuleSpec

    from medgrpo import backends

    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda module: ModuleSpec(module, None))
    vllm_on = OmegaConf.create({"name": name, "fast_inference": True})
    with pytest.raises(ConfigError, match="lora.method=full with backend.fast_inference=true.*fast_inference=false"):
        backends.resolve_backend(vllm_on, FULL)
    assert backends.resolve_backend(OmegaConf.create({"name": name, "fast_inference": False}), FULL) == "unsloth"


def test_free_gpu_memory_is_taken_after_the_previous_engine_is_freed_and_before_the_weights_load(fake_unsloth,
                                                                                                 monkeypatch):
    """results.json host.gpu, which make gpu-check compares between the jobs of one process: the measurement (here
    a record of what had happened when it was taken; CUDA's own needs a GPU) must follow the release of the
    previous job's engine and precede the new weights."""
    from medgrpo.backends import load_policy

    backend, fast, deleted = fake_unsloth
    monkeypatch.setattr(backend, "cuda_memory", lambda: {"engines_freed": list(deleted),
                                                          "loads": sum(name == "from_pretrained" for name, _ in fast.calls)})
    first = load_policy("unsloth", MODEL, LORA, backend_cfg=backend_cfg(), model_path="org/base")
    second = load_policy("unsloth", MODEL, LORA, backend_cfg=backend_cfg(), model_path="org/base")
    assert first.gpu == {"engines_freed": [], "loads": 0}
    assert second.gpu == {"engines_freed": ["engine-1"], "loads": 1}


def test_the_standby_variable_is_set_from_the_config_before_unsloth_reads_it(fake_unsloth, monkeypatch, tmp_path):
    backend, _, _ = fake_unsloth
    package = tmp_path / "site" / "unsloth"
    package.mkdir(parents=True)
    # A FAKE unsloth package (argument plumbing only): it keeps the variable as Unsloth reads it, at import time.
    (package / "__init__.py").write_text("import os\nSTANDBY_AT_IMPORT = os.environ.get('UNSLOTH_VLLM_STANDBY')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "unsloth")
    monkeypatch.setenv(backend.STANDBY_ENV, "1")  # left over from an earlier job, or set in the shell
    try:
        assert backend.import_unsloth(standby=False).STANDBY_AT_IMPORT == "0"
    finally:
        sys.modules.pop("unsloth", None)


def test_standby_cannot_change_within_one_process(fake_unsloth):
    backend, _, _ = fake_unsloth  # unsloth "imported" with standby 0
    backend.import_unsloth(standby=False)
    with pytest.raises(ConfigError, match="backend.standby.*submitit_local"):
        backend.import_unsloth(standby=True)

# ---- minor: unsloth imported before trl/transformers/peft ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.gpu_path
def test_the_entrypoint_imports_unsloth_before_trl_transformers_and_peft(tmp_path, model_cache):
    env, record = fake_unsloth_package(tmp_path)
    # run_entrypoint puts src/run.py after this driver
    driver = cuda_driver(tmp_path, "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")
    # lm_head out of the targets: vLLM (fast_inference) cannot apply a LoRA on it, which is refused before load
    done = run_entrypoint("preset=tiny", "backend=unsloth", "lora.load_in_4bit=false", "lora.target_modules=[q_proj]",
                          "logger=disabled",
                          f"hydra.run.dir={tmp_path / 'job'}", cache=model_cache, prefix=[sys.executable, str(driver)],
                          env=env)
    assert STOP in done.stderr  # the job reached the Unsloth backend
    assert imported_before_unsloth(record) == {"trl": False, "transformers": False, "peft": False}

# ---- 6. one objective on both backends: Unsloth's GRPOConfig fills and overrides -----------------------------------


def test_the_recipe_states_every_value_unsloth_would_fill(tmp_path):
    from medgrpo.config import compose_config
    from medgrpo.train import FILLED_BY_UNSLOTH, check_grpo_for_backend

    for preset in ((), ("preset=tiny",)):
        grpo = compose_config(*preset, output_dir=tmp_path).grpo
        assert all(grpo.get(key) is not None for key in FILLED_BY_UNSLOTH)
        assert (grpo.loss_type, grpo.beta, grpo.epsilon_high) == ("dapo", 0.0, 0.28)
        assert grpo.mask_truncated_completions is False and grpo.vllm_importance_sampling_correction is False
        check_grpo_for_backend(grpo, "unsloth", use_vllm=True)


@pytest.mark.parametrize("change, key", [
    ({"epsilon_high": None}, "grpo.epsilon_high"),
    ({"mask_truncated_completions": None}, "grpo.mask_truncated_completions"),
    ({"loss_type": "dr_grpo"}, "grpo.scale_rewards"),            # Unsloth forces scale_rewards none for dr_grpo
    ({"use_vllm": False}, "grpo.use_vllm"),                      # Unsloth's trainer turns it back on
    ({"vllm_mode": "server"}, "grpo.vllm_mode"),                 # ... and forces colocate
])
def test_values_unsloth_would_not_keep_are_refused_before_loading(change, key):
    from medgrpo.train import check_grpo_for_backend

    grpo = OmegaConf.create({"loss_type": "dapo", "beta": 0.0, "epsilon_high": 0.28,
                             "mask_truncated_completions": False, **change})
    check_grpo_for_backend(grpo, "hf", use_vllm=False)  # plain TRL keeps what it is given
    with pytest.raises(ConfigError) as refused:
        check_grpo_for_backend(grpo, "unsloth", use_vllm=True)
    assert refused.value.key == key


def test_dr_grpo_runs_on_unsloth_once_scale_rewards_is_the_value_it_forces():
    from medgrpo.train import check_grpo_for_backend

    check_grpo_for_backend(OmegaConf.create({"loss_type": "dr_grpo", "scale_rewards": "none", "beta": 0.0,
                                             "epsilon_high": 0.2, "mask_truncated_completions": False}),
                           "unsloth", use_vllm=True)


def _grpo_settings(tmp_path, **extra):
    return {"output_dir": str(tmp_path), "use_cpu": True, "bf16": False, "report_to": [], "loss_type": "dapo",
            "per_device_train_batch_size": 4, "num_generations": 4, **extra}


def _unsloth_patched_grpo_config(monkeypatch):
    """A FAKE of Unsloth's patched GRPOConfig (argument plumbing only), with the behaviour that matters here copied
    from unsloth 2026.10.9: its __init__ fills epsilon_high for an explicit dapo (unsloth/models/rl.py:3563) and
    sets a batch size that is not a multiple of num_generations to num_generations (rl_replacements.py:5262); then
    it is renamed to pass for TRL's own class (rl.py:701-728: __name__, __qualname__ = "GRPOConfig", __module__ =
    "trl.trainer.grpo_config") and bound where TRL's was (rl.py:3961-3992: trl.GRPOConfig and its module)."""
    import trl
    import trl.trainer.grpo_config
    from trl import GRPOConfig

    class UnslothGRPOConfig(GRPOConfig):
        def __init__(self, **kwargs):
            if kwargs.get("loss_type") == "dapo" and kwargs.get("epsilon_high") is None:
                kwargs["epsilon_high"] = 0.28
            batch, generations = kwargs.get("per_device_train_batch_size", 8), kwargs.get("num_generations", 8)
            if batch % generations:
                kwargs["per_device_train_batch_size"] = generations
            super().__init__(**kwargs)

    UnslothGRPOConfig.__module__ = GRPOConfig.__module__
    UnslothGRPOConfig.__qualname__ = UnslothGRPOConfig.__name__ = "GRPOConfig"
    monkeypatch.setattr(trl, "GRPOConfig", UnslothGRPOConfig)
    monkeypatch.setattr(trl.trainer.grpo_config, "GRPOConfig", UnslothGRPOConfig)
    return GRPOConfig, UnslothGRPOConfig


def test_the_fake_passes_for_trl_s_class_as_unsloth_s_does(monkeypatch):
    trl_class, patched = _unsloth_patched_grpo_config(monkeypatch)
    assert (patched.__name__, patched.__qualname__, patched.__module__) == \
        (trl_class.__name__, trl_class.__qualname__, trl_class.__module__)
    import trl

    assert trl.GRPOConfig is patched and patched is not trl_class


def test_a_grpo_config_the_trainer_holds_differently_is_refused(tmp_path, monkeypatch):
    from medgrpo.train import held_grpo_config, trl_grpo_values

    trl_class, patched = _unsloth_patched_grpo_config(monkeypatch)
    unstated = _grpo_settings(tmp_path)
    with pytest.raises(ConfigError, match=r"grpo.epsilon_high.*None, but the trainer's GRPOConfig holds 0.28"):
        held_grpo_config(patched(**unstated), trl_grpo_values(unstated), grpo_keys=["loss_type"])
    # 6 x 2 accumulation = 12 completions, 3 groups of 4: TRL keeps it; Unsloth sets the batch to 4 (6 % 4 != 0)
    uneven = _grpo_settings(tmp_path, epsilon_high=0.28, per_device_train_batch_size=6, gradient_accumulation_steps=2)
    with pytest.raises(ConfigError, match=r"grpo.per_device_train_batch_size.*6, but .* holds 4"):
        held_grpo_config(patched(**uneven), trl_grpo_values(uneven), grpo_keys=["per_device_train_batch_size"])
    stated = _grpo_settings(tmp_path, epsilon_high=0.28)
    held = held_grpo_config(patched(**stated), trl_grpo_values(stated), grpo_keys=["loss_type", "epsilon_high"])
    assert held["epsilon_high"] == 0.28 and held["loss_type"] == "dapo"
    assert json.loads(json.dumps(held)) == held
    assert held_grpo_config(trl_class(**unstated), trl_grpo_values(unstated), grpo_keys=[])["epsilon_high"] is None


@pytest.mark.slow
@pytest.mark.gpu_path
def test_results_json_records_the_grpo_config_the_trainer_held(tmp_path, model_cache):
    done = run_entrypoint("preset=tiny", "grpo.max_steps=1", "eval.after_training=false", "logger=disabled",
                          f"hydra.run.dir={tmp_path / 'job'}", cache=model_cache)
    assert done.returncode == 0, done.stderr[-2000:]
    held = json.loads((tmp_path / "job" / "results.json").read_text())["grpo_config"]
    assert (held["loss_type"], held["epsilon_high"], held["mask_truncated_completions"], held["max_steps"]) == \
        ("dapo", 0.28, False, 1)

# ---- 4. export after a 4-bit run -------------------------------------------------------------------------------------


def test_export_after_a_4bit_run_says_which_16bit_weights_it_needs(tmp_path):
    from tests._run import run_module

    job = tmp_path / "job"
    (job / "adapter").mkdir(parents=True)
    (job / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/m-bnb-4bit"}))
    config = {"model": {"name_or_path": "org/model-never-downloaded", "builder": None, "trust_remote_code": False},
              "lora": {"load_in_4bit": True}}
    (job / "results.json").write_text(json.dumps({"status": "ok", "config": config}))
    done = run_module("medgrpo.export", str(job), "--formats", "lora,merged", timeout=120,
                      env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "16-bit weights of org/model-never-downloaded" in done.stderr and "4-bit base" in done.stderr
    assert "HF_HUB_OFFLINE=0 make export" in done.stderr and "FORMATS=lora" in done.stderr
    assert (job / "export" / "lora" / "adapter_config.json").is_file()  # what could be exported, was


def _job_with_weights(tmp_path, tiny_model_dir, method: str, weights: str, base: Path | None = None) -> Path:
    """A finished job folder whose results.json says lora.method=`method` and whose adapter/ holds `weights`: a
    real PEFT LoRA of the tiny model ("adapter") or the tiny model itself ("whole")."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = tmp_path / "job"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if weights == "adapter":
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(job / "adapter")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(job / "adapter")
    config = {"model": {"name_or_path": str(base or tiny_model_dir), "builder": None, "trust_remote_code": False},
              "lora": {"method": method, "load_in_4bit": False}}
    (job / "results.json").write_text(json.dumps({"status": "ok", "config": config}))
    return job


@pytest.mark.parametrize("method, weights, said", [
    ("full", "adapter", "a PEFT adapter (adapter_config.json), where lora.method=full"),  # Unsloth before the fix
    ("lora", "whole", "a whole model (config.json, no adapter_config.json), where lora.method=lora"),
])
def test_export_refuses_weights_that_are_not_what_the_method_trains(method, weights, said, tmp_path,
                                                                     tiny_model_dir):
    from tests._run import run_module

    job = _job_with_weights(tmp_path, tiny_model_dir, method, weights)
    done = run_module("medgrpo.export", str(job), "--formats", "merged", "--dtype", "float32", timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert said in done.stderr
    assert not (job / "export" / "merged_float32").exists()  # before: an adapter written as the "merged" model


def test_export_from_a_4bit_base_without_cuda_says_it_must_dequantize_on_the_gpu(tmp_path, tiny_model_dir):
    """A *-bnb-4bit checkpoint: the tiny model's config with the quantization_config transformers saves after 4-bit
    loading (no quantized weights can be made without CUDA; the config is what export reads first)."""
    from tests._run import run_module

    base = tmp_path / "org--model-bnb-4bit"
    base.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                     "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16"}
    (base / "config.json").write_text(json.dumps(config))
    job = _job_with_weights(tmp_path, tiny_model_dir, "lora", "adapter", base=base)
    done = run_module("medgrpo.export", str(job), "--formats", "lora,merged", timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "bitsandbytes 4-bit checkpoint" in done.stderr and "FORMATS=lora" in done.stderr
    assert not (job / "export" / "merged_bfloat16").exists()
    assert (job / "export" / "lora" / "adapter_config.json").is_file()
