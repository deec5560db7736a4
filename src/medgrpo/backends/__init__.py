"""Backends load the policy (model + tokenizer + LoRA). `backend=auto` picks Unsloth on CUDA when it is
installed, else plain transformers + PEFT. Unsloth is never imported on the CPU path: it patches TRL globally.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from medgrpo.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Policy:
    """What training and evaluation need from a backend."""

    model: Any          # a PEFT-wrapped causal LM (trainable LoRA), or a plain model when evaluating a base
    tokenizer: Any      # left-padding tokenizer with a chat template and a pad token
    backend: str        # "hf" | "unsloth"
    model_path: str     # where the base weights came from (hub id or local dir)
    gpu: dict | None = None  # cuda_memory() right before the weights loaded (results.json host.gpu); None on CPU
    vllm: Any = None    # the vllm.LLM evaluation generates with (Unsloth's, or the hf backend's), or None


PEFT_METHODS = ("lora", "dora", "prefix", "ptuning", "full")
PROMPT_LEARNING = ("prefix", "ptuning")  # virtual key/value tokens: no LoRA weights for Unsloth or vLLM to load


@dataclass(frozen=True)
class LoraSpec:
    """The `lora` group (the PEFT method and its settings), checked once: what the hf and unsloth backends and
    export build adapters from. lora.method: lora | dora | prefix (prefix tuning) | ptuning (P-Tuning v2) | full."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    load_in_4bit: bool
    method: str = "lora"
    num_virtual_tokens: int = 16

    @classmethod
    def from_config(cls, lora_cfg: DictConfig) -> LoraSpec:
        method = lora_cfg.get("method", "lora")
        if method not in PEFT_METHODS:
            raise ConfigError("lora.method", f"expected one of {list(PEFT_METHODS)}, got {method!r}")
        if method == "full" and lora_cfg.load_in_4bit:
            raise ConfigError("lora.method", "lora.method=full with lora.load_in_4bit=true: full fine-tuning cannot "
                              "update 4-bit weights; set lora.load_in_4bit=false (or use lora=qlora)")
        virtual = lora_cfg.get("num_virtual_tokens", 16)
        if not isinstance(virtual, int) or isinstance(virtual, bool) or virtual <= 0:
            raise ConfigError("lora.num_virtual_tokens", f"expected a positive integer, got {virtual!r}")
        rank, alpha, dropout = lora_cfg.rank, lora_cfg.alpha, lora_cfg.dropout
        if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
            raise ConfigError("lora.rank", f"expected a positive integer, got {rank!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ConfigError("lora.alpha", f"expected a positive number, got {alpha!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError("lora.dropout", f"expected 0 <= dropout < 1, got {dropout!r}")
        if not lora_cfg.target_modules:
            raise ConfigError("lora.target_modules", "expected at least one module name")
        return cls(rank=rank, alpha=float(alpha), dropout=float(dropout),
                   target_modules=tuple(OmegaConf.to_container(lora_cfg.target_modules)),
                   load_in_4bit=bool(lora_cfg.load_in_4bit), method=method, num_virtual_tokens=virtual)

    def peft_config(self):
        """The PEFT config for this method; None for full fine-tuning (every weight trains, no adapter)."""
        from peft import LoraConfig, PrefixTuningConfig

        if self.method == "full":
            return None
        if self.method in PROMPT_LEARNING:
            # Prefix tuning (Li & Liang) reparameterises the prefix through an MLP; P-Tuning v2 trains the deep
            # prompt directly. Both are PEFT's PrefixTuningConfig.
            return PrefixTuningConfig(num_virtual_tokens=self.num_virtual_tokens, task_type="CAUSAL_LM",
                                      prefix_projection=self.method == "prefix")
        return LoraConfig(**self.peft_kwargs(), use_dora=self.method == "dora", task_type="CAUSAL_LM")

    def peft_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by peft.LoraConfig and Unsloth's FastLanguageModel.get_peft_model."""
        return {"r": self.rank, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": list(self.target_modules)}


def trained_weights_problem(folder: str | Path, method: str) -> str | None:
    """What is wrong with a job's adapter/ folder for its lora.method (None: nothing). It holds what the method
    trains: the whole model after lora.method=full (config.json, no adapter_config.json), a PEFT adapter
    (adapter_config.json) otherwise."""
    adapter, whole = ((Path(folder) / name).is_file() for name in ("adapter_config.json", "config.json"))
    if not adapter and not whole:
        return (f"no trained weights in {folder} (adapter_config.json, or config.json after lora=full); was "
                "training enabled?")
    if method == "full" and adapter:
        return (f"{folder} holds a PEFT adapter (adapter_config.json), where lora.method=full saves the whole model: "
                "the run trained a LoRA, not every weight (backend=unsloth did so before it passed full_finetuning "
                "to Unsloth). Its results are a LoRA's; train again with lora=full backend.fast_inference=false, or "
                "with a LoRA (lora=r64)")
    if method != "full" and not adapter:
        return (f"{folder} holds a whole model (config.json, no adapter_config.json), where lora.method={method} "
                "saves a PEFT adapter: this folder is not the job's adapter")
    return None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cuda_memory() -> dict | None:
    """The CUDA device's name and its total and free memory in GiB as the driver reports them, or None without
    CUDA. Taken right before a job's weights load: Unsloth sizes a vLLM engine from the free memory, so an engine
    an earlier job of the process left behind shows here as missing memory, not as an error."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return {"name": torch.cuda.get_device_name(), "total_gib": round(total / 2**30, 2),
            "free_gib_before_load": round(free / 2**30, 2)}


def resolve_backend(backend_cfg: DictConfig, lora: LoraSpec) -> str:
    """The backend `backend.name` asks for, checked against this machine (4-bit included, after `auto` has
    resolved). Imports nothing heavy."""
    if backend_cfg.name == "unsloth":  # a config conflict on any machine: refused before the machine checks
        check_method_for_unsloth(lora, bool(backend_cfg.get("fast_inference")))
    name = resolve_backend_name(backend_cfg.name)
    if name == "hf" and lora.load_in_4bit and not cuda_available():
        raise ConfigError("lora.load_in_4bit", "4-bit (bitsandbytes) needs CUDA; set lora.load_in_4bit=false on CPU")
    if name == "unsloth":  # backend=auto on a GPU machine
        check_method_for_unsloth(lora, bool(backend_cfg.get("fast_inference")))
    return name


def check_method_for_unsloth(lora: LoraSpec, fast_inference: bool) -> None:
    """Unsloth and its vLLM rollouts handle plain LoRA; Unsloth without vLLM also full fine-tuning."""
    if lora.method == "full" and fast_inference:
        # Unsloth 2026.10.9 raises NotImplementedError for full_finetuning=True with fast_inference=True
        # (unsloth/models/vision.py:4327), after the model has loaded.
        raise ConfigError("lora.method", "lora.method=full with backend.fast_inference=true: Unsloth builds no vLLM "
                          "engine for full fine-tuning; set backend.fast_inference=false (Unsloth without vLLM) or "
                          "backend=hf")
    if lora.method not in (*PROMPT_LEARNING, "dora"):
        return
    if fast_inference:
        raise ConfigError("lora.method", f"lora.method={lora.method} with backend.fast_inference=true: vLLM "
                          "rollouts load plain LoRA adapters only; use backend=hf or lora.method=lora")
    raise ConfigError("lora.method", f"lora.method={lora.method} with backend=unsloth: Unsloth patches LoRA "
                      "layers only; use backend=hf for prefix/P-Tuning/DoRA")


def resolve_backend_name(name: str) -> str:
    unsloth_installed = importlib.util.find_spec("unsloth") is not None
    if name == "auto":
        return "unsloth" if cuda_available() and unsloth_installed else "hf"
    if name == "unsloth":
        if not cuda_available():
            raise ConfigError("backend", "backend=unsloth needs a CUDA GPU; use backend=hf (or auto) on this machine")
        if not unsloth_installed:
            raise ConfigError("backend", "backend=unsloth needs the gpu extra: pip install -e '.[gpu]'")
    return name


def check_model_builder(model_cfg: DictConfig) -> None:
    """model.builder is null, a tiny size, or gguf with its package installed (checked without loading anything)."""
    from medgrpo.packaged_model import locate_gguf
    from medgrpo.tiny import ARCHITECTURES

    builder = model_cfg.get("builder")
    if builder == "gguf":
        locate_gguf(model_cfg.gguf)
    elif builder is not None and builder not in ARCHITECTURES:
        raise ConfigError("model.builder", f"expected null, gguf or one of {list(ARCHITECTURES)}, got {builder!r}")


def resolve_model_path(model_cfg: DictConfig) -> str:
    """A hub id or local dir for the base weights. model.builder=tiny|tiny_learner builds a tiny random model;
    gguf converts a GGUF file shipped in a package (medgrpo.packaged_model); each once, into model.name_or_path."""
    from medgrpo.packaged_model import ensure_gguf_model
    from medgrpo.tiny import ensure_tiny_model

    check_model_builder(model_cfg)
    if model_cfg.builder == "gguf":
        return str(ensure_gguf_model(model_cfg.name_or_path, model_cfg.gguf))
    if model_cfg.builder is not None:
        return str(ensure_tiny_model(model_cfg.name_or_path, size=model_cfg.builder))
    return str(model_cfg.name_or_path)


def load_policy(backend: str, model_cfg: DictConfig, lora: LoraSpec, *, backend_cfg: DictConfig | None = None,
                model_path: str | None = None, tokenizer=None, adapter_path: str | Path | None = None,
                trainable: bool = True, seed: int = 0, vllm_eval: bool = False) -> Policy:
    """Load base model + tokenizer and attach LoRA: a new trainable one, or the saved `adapter_path`.
    `model_path` defaults to resolve_model_path(model_cfg); pass the `tokenizer` already loaded for data
    preparation to load it only once (the hf backend uses it; Unsloth loads its own). `vllm_eval`: the hf backend
    also starts a vLLM engine for evaluation (Unsloth's follows backend.fast_inference).
    Every vLLM engine an earlier job of this process left (any backend's, TRL's colocated one) is released first."""
    from medgrpo.backends.vllm_engines import release_vllm_engines

    release_vllm_engines()
    model_path = model_path or resolve_model_path(model_cfg)
    if adapter_path is None:
        log.info("Loading %s with backend=%s", model_path, backend)
    elif lora.method == "full":  # a saved full fine-tune is the whole model: the base folder is not read
        log.info("Loading the fine-tuned model %s with backend=%s", adapter_path, backend)
    else:
        log.info("Loading %s + adapter %s with backend=%s", model_path, adapter_path, backend)
    if backend == "unsloth":
        from medgrpo.backends.unsloth import load_unsloth_policy

        return load_unsloth_policy(model_cfg, lora, backend_cfg, model_path, adapter_path, trainable, seed)
    from medgrpo.backends.hf import load_hf_policy

    policy = load_hf_policy(model_cfg, lora, model_path, adapter_path, trainable, tokenizer)
    if vllm_eval:
        from medgrpo.backends.vllm_engines import start_eval_engine

        policy.vllm = start_eval_engine(model_cfg, model_path, lora, adapter_path,
                                        backend_cfg.gpu_memory_utilization, seed)
    return policy
