"""Export a trained job: the LoRA adapter, a merged 16-bit model, and GGUF where llama.cpp is available.

    python -m medgrpo.export <job dir> [--formats lora,merged,gguf] [--dtype bfloat16] [--out DIR]
    make export RUN=<job dir>

The merged model is the base model with the LoRA folded in: it loads with plain transformers (or vLLM) and
predicts what the adapter model predicts. GGUF conversion uses llama.cpp's `convert_hf_to_gguf.py`, found on PATH or
in $LLAMA_CPP_DIR; it is never downloaded or built here (Unsloth's save_pretrained_gguf builds it from the network).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from medgrpo.backends import trained_weights_problem

log = logging.getLogger("medgrpo.export")
FORMATS = ("lora", "merged", "gguf")


def _job_config(job_dir: Path):
    results = job_dir / "results.json"
    if not results.is_file():
        raise SystemExit(f"{job_dir}: no results.json — is this a medgrpo job directory?")
    cfg = OmegaConf.create(json.loads(results.read_text())["config"])
    problem = trained_weights_problem(job_dir / "adapter", cfg.lora.get("method", "lora"))
    if problem is not None:
        raise SystemExit(f"{job_dir}: {problem}")
    return cfg


def _method(job_dir: Path) -> str:
    return _job_config(job_dir).lora.get("method", "lora")


def export_lora(job_dir: Path, out: Path) -> Path:
    if _method(job_dir) == "full":
        raise SystemExit(f"{job_dir}: lora.method=full trained the whole model, there is no adapter; "
                         "export FORMATS=merged")
    target = out / "lora"
    shutil.copytree(job_dir / "adapter", target, dirs_exist_ok=True)
    return target


def missing_base_weights(model_path: str) -> bool:
    """Whether the 16-bit weights at `model_path` (a local dir or a hub id) can be neither read nor downloaded:
    offline (HF_HUB_OFFLINE=1, as `make export` sets it) a hub id must already be in the local cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(model_path).is_dir() or not constants.HF_HUB_OFFLINE:
        return False
    return not any(isinstance(try_to_load_from_cache(model_path, name), str)
                   for name in ("model.safetensors.index.json", "model.safetensors"))


def _bitsandbytes_quantized(config) -> bool:
    quantization = getattr(config, "quantization_config", None)
    if quantization is None:
        return False
    method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization.quant_method
    return str(getattr(method, "value", method)) == "bitsandbytes"


def load_base_unquantized(model_path: str, dtype: str, trust_remote_code: bool):
    """The base model in `dtype`. A bitsandbytes 4-bit checkpoint (a *-bnb-4bit hub repo such as Unsloth's, or a
    folder saved after 4-bit loading) would load quantized, and a LoRA merged into it is quantized again on save
    (peft's bnb merge), writing 4-bit weights into merged_<dtype>/: it is dequantized first (transformers'
    model.dequantize, which bitsandbytes does on CUDA). The merge then folds the LoRA into the weights it was
    trained against."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from medgrpo.backends import cuda_available

    torch_dtype = getattr(torch, dtype)
    if not _bitsandbytes_quantized(AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)):
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    if not cuda_available():
        raise SystemExit(f"{model_path} is a bitsandbytes 4-bit checkpoint: a merged {dtype} model needs it "
                         "dequantized, which bitsandbytes does on CUDA only. Export on the GPU machine, or export "
                         "the adapter alone (FORMATS=lora).")
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype, device_map={"": 0},
                                                trust_remote_code=trust_remote_code)
    log.info("Dequantizing the 4-bit base %s to %s before merging", model_path, dtype)
    return base.dequantize(dtype=torch_dtype)


def export_merged(job_dir: Path, out: Path, dtype: str) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medgrpo.backends import resolve_model_path

    cfg = _job_config(job_dir)
    method = cfg.lora.get("method", "lora")
    if method in ("prefix", "ptuning"):
        raise SystemExit(f"{job_dir}: lora.method={method} trains virtual tokens, which cannot be merged into the "
                         "model's weights; export the adapter (FORMATS=lora) and load it with PEFT")
    target = out / f"merged_{dtype}"
    if method == "full":  # the trained model itself, in the asked dtype
        AutoModelForCausalLM.from_pretrained(job_dir / "adapter", dtype=getattr(torch, dtype)).save_pretrained(target)
        AutoTokenizer.from_pretrained(job_dir / "adapter").save_pretrained(target)
        return target
    model_path = resolve_model_path(cfg.model)
    if missing_base_weights(model_path):
        # A 4-bit Unsloth run downloads Unsloth's pre-quantized copy of the model, never its 16-bit weights; Unsloth's
        # own merged save downloads them too (unsloth_zoo/saving_utils.py merge_and_overwrite_lora).
        why = (" The run trained on a 4-bit base (lora.load_in_4bit=true), so only quantized weights were fetched."
               if cfg.lora.load_in_4bit else "")
        raise SystemExit(f"{job_dir}: a merged model needs the 16-bit weights of {model_path}, which are not in the "
                         f"local cache and HF_HUB_OFFLINE=1 forbids downloading them.{why} Download them once "
                         f"(HF_HUB_OFFLINE=0 make export RUN={job_dir}, or huggingface-cli download {model_path}), "
                         "or export the adapter alone (FORMATS=lora).")
    base = load_base_unquantized(model_path, dtype, cfg.model.trust_remote_code)
    if base.config.tie_word_embeddings:
        # Merging a LoRA on lm_head into a weight tied to the input embeddings would change the embeddings too: the
        # merged model would no longer predict what the adapter model predicts. Untie first (lm_head gets a copy).
        base.lm_head.weight = torch.nn.Parameter(base.get_input_embeddings().weight.detach().clone())
        base.config.tie_word_embeddings = False
    merged = PeftModel.from_pretrained(base, str(job_dir / "adapter")).merge_and_unload()  # LoRA and DoRA
    merged.save_pretrained(target)
    AutoTokenizer.from_pretrained(job_dir / "adapter").save_pretrained(target)
    return target


def find_llama_cpp_converter() -> Path | None:
    on_path = shutil.which("convert_hf_to_gguf.py")
    if on_path:
        return Path(on_path)
    root = os.environ.get("LLAMA_CPP_DIR")
    candidate = Path(root) / "convert_hf_to_gguf.py" if root else None
    return candidate if candidate is not None and candidate.is_file() else None


def export_gguf(merged_dir: Path, out: Path, quantization: str = "q8_0") -> Path:
    converter = find_llama_cpp_converter()
    if converter is None:
        raise SystemExit("GGUF export needs llama.cpp's convert_hf_to_gguf.py: clone llama.cpp, install its "
                         "requirements, and set LLAMA_CPP_DIR=<its folder> (or put the script on PATH). "
                         "The LoRA and merged exports are done.")
    target = out / f"model-{quantization}.gguf"
    subprocess.run([sys.executable, str(converter), str(merged_dir), "--outfile", str(target),
                    "--outtype", quantization], check=True)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--formats", default="lora,merged", help=f"comma-separated, of {', '.join(FORMATS)}")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--out", type=Path, default=None, help="default: <job dir>/export")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        parser.error(f"--formats: unknown {unknown}; expected some of {list(FORMATS)}")
    _job_config(args.job_dir)
    out = args.out or args.job_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    if "lora" in formats:
        log.info("LoRA adapter -> %s", export_lora(args.job_dir, out))
    merged_dir = None
    if "merged" in formats or "gguf" in formats:
        merged_dir = export_merged(args.job_dir, out, args.dtype)
        log.info("Merged %s model -> %s", args.dtype, merged_dir)
    if "gguf" in formats:
        log.info("GGUF -> %s", export_gguf(merged_dir, out))


if __name__ == "__main__":
    main()
