"""A tiny Qwen2-architecture model with random weights, built locally so the whole pipeline runs without a download.

    python -m medgrpo.tiny [CACHE_DIR]     # build (or find) it and print its path

Its accuracy means nothing: the weights are random. It exists so that training, evaluation, sweeps and tables
run for real on a CPU, in tests and in `make demo`. The byte-level BPE tokenizer is trained on the bundled data
samples and carries a ChatML chat template, so prompts are rendered exactly like a real chat model's.
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

ARCHITECTURE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)
VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Format tags as single tokens, as in real reasoning models' vocabularies (Qwen3 has <think>).
TAG_TOKENS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus_files(samples_dir: Path) -> list[Path]:
    files = sorted(p for p in samples_dir.rglob("*") if p.suffix in {".jsonl", ".json", ".csv", ".txt"})
    if not files:
        raise FileNotFoundError(f"no text files under {samples_dir} to train the tiny tokenizer on")
    return files


def _cache_key(files: list[Path]) -> str:
    digest = hashlib.sha256(f"v{BUILDER_VERSION}{ARCHITECTURE}{VOCAB_SIZE}{TAG_TOKENS}".encode())
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
        model_max_length=ARCHITECTURE["max_position_embeddings"],
    )


def ensure_tiny_model(cache_dir: str | os.PathLike, samples_dir: Path = SAMPLES_DIR) -> Path:
    """Return the directory of the tiny model (HF format), building it there first if needed."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    files = _corpus_files(samples_dir)
    target = Path(cache_dir) / f"tiny-qwen2-{_cache_key(files)}"
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
        **ARCHITECTURE,
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
        provenance = {"builder_version": BUILDER_VERSION, "files": [f.name for f in files]}
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
    print(ensure_tiny_model(sys.argv[1] if len(sys.argv) > 1 else ".cache/models"))
