"""Tiny Qwen2-architecture models with random weights, built locally so the whole pipeline runs without a download.

    python -m medgrpo.tiny [CACHE_DIR] [tiny|tiny_learner]    # build (or find) one and print its path

Their accuracy means nothing: the weights are random. They exist so that training, evaluation, sweeps and tables
run for real on a CPU, in tests and in `make demo`. Two sizes (model.builder):
- `tiny` (2 layers, hidden 64): the fastest; the plumbing tests use it. SFT plateaus near 0.76 format rate.
- `tiny_learner` (4 layers, hidden 128): big enough to learn the response format by SFT in ~200 CPU steps
  (measured on 2 cores: 0.98 format rate on 50 held-out PubMedQA items), so `make demo` and the learning tests
  show SFT -> GRPO learning. It learns the format, never medicine.
The byte-level BPE tokenizer is trained on the bundled data samples and carries a ChatML chat template, so
prompts are rendered exactly like a real chat model's.
The build is deterministic and cached under a key of the corpus and the architecture: a second call is instant.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "data" / "samples"
BUILDER_VERSION = 1  # bump when the architecture or tokenizer recipe changes, to invalidate caches

_SHARED = dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0,
               tie_word_embeddings=True)
ARCHITECTURES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, **_SHARED),
    "tiny_learner": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, **_SHARED),
}
VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Format tags as single tokens, as in real reasoning models' vocabularies (Qwen3 has <think>).
TAG_TOKENS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _is_utf8(path: Path) -> bool:
    try:
        path.read_bytes().decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _corpus_files(samples_dir: Path) -> list[Path]:
    # The tokenizer trainer reads UTF-8 only: the GB18030 dialogue sample stays out (byte-level BPE still encodes
    # every Chinese character, as bytes), which also keeps the tokenizer of the other samples unchanged.
    files = sorted(p for p in samples_dir.rglob("*") if p.suffix in {".jsonl", ".json", ".csv", ".txt"} and _is_utf8(p))
    if not files:
        raise FileNotFoundError(f"no text files under {samples_dir} to train the tiny tokenizer on")
    return files


def _cache_key(files: list[Path], architecture: dict) -> str:
    digest = hashlib.sha256(f"v{BUILDER_VERSION}{architecture}{VOCAB_SIZE}{TAG_TOKENS}".encode())
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_tiny_tokenizer(files: list[Path]):
    """Train a byte-level BPE tokenizer on `files` and wrap it as a transformers fast tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(f) for f in files], trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=_SHARED["max_position_embeddings"],
    )


def ensure_tiny_model(cache_dir: str | os.PathLike, samples_dir: Path = SAMPLES_DIR, size: str = "tiny") -> Path:
    """Return the directory of the tiny model of `size` (ARCHITECTURES; HF format), building it there first if
    needed."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    architecture = ARCHITECTURES[size]
    files = _corpus_files(samples_dir)
    prefix = "tiny-qwen2" if size == "tiny" else f"{size}-qwen2"
    target = Path(cache_dir) / f"{prefix}-{_cache_key(files, architecture)}"
    if (target / "config.json").exists():
        return target
    log.info("Building the tiny model (random weights, tokenizer trained on %d bundled files) in %s",
             len(files), target)
    tokenizer = build_tiny_tokenizer(files)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **architecture,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temp dir and rename, so that parallel jobs of a sweep never see a half-written model.
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        provenance = {"builder_version": BUILDER_VERSION, "size": size, "files": [f.name for f in files]}
        (staging / "medgrpo_tiny.json").write_text(json.dumps(provenance))
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").exists():  # lost a race against another job: theirs is identical
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_tiny_model(sys.argv[1] if len(sys.argv) > 1 else ".cache/models",
                            size=sys.argv[2] if len(sys.argv) > 2 else "tiny"))
