"""transformers + PEFT: the backend that runs anywhere (CPU included). 4-bit QLoRA through bitsandbytes on CUDA."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from medgrpo.backends import LoraSpec, Policy, cuda_available, cuda_memory
from medgrpo.errors import ConfigError


def torch_dtype(name: str) -> torch.dtype:
    """model.dtype as the dtype the weights load in (auto: bfloat16 or float16 on CUDA, float32 on CPU)."""
    if name == "auto":
        if cuda_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


def load_tokenizer(model_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"  # decoder-only batched generation needs left padding
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ConfigError("model.name_or_path", f"{model_path} has no chat template; use an instruct/chat model")
    return tokenizer


def load_hf_policy(model_cfg: DictConfig, lora: LoraSpec, model_path: str, adapter_path: str | Path | None,
                   trainable: bool, tokenizer=None) -> Policy:
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    tokenizer = tokenizer or load_tokenizer(model_path, model_cfg.trust_remote_code)
    dtype = torch_dtype(model_cfg.dtype)
    quantization = None
    if lora.load_in_4bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    full = lora.method == "full"  # full fine-tuning trains the model itself: a saved one is the whole model
    gpu = cuda_memory()
    model = AutoModelForCausalLM.from_pretrained(
        str(adapter_path) if full and adapter_path is not None else model_path,
        dtype=dtype,
        quantization_config=quantization,
        trust_remote_code=model_cfg.trust_remote_code,
        device_map={"": 0} if cuda_available() else None,
    )
    if quantization is not None:
        model = prepare_model_for_kbit_training(model)
    if full:
        model.requires_grad_(trainable)
    elif adapter_path is not None:
        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=trainable)
    else:
        model = get_peft_model(model, lora.peft_config())
    return Policy(model=model, tokenizer=tokenizer, backend="hf", model_path=model_path, gpu=gpu)
