"""A tiny GGUF file written with the gguf package, laid out as llama.cpp writes SmolLM2's (llama architecture, GPT-2
byte-level BPE, ChatML control tokens at ids 0-2, EOS and pad <|im_end|>): the builder's tests convert it in
seconds instead of the real model's minute."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he"]
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")
HIDDEN, LAYERS, FFN, HEADS, KV_HEADS = 16, 1, 32, 2, 1


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 1-layer llama with random float32 weights (seed) and a byte-level tokenizer; EOS id 2 (<|im_end|>)."""
    import gguf
    from tokenizers import pre_tokenizers

    tokens = SPECIAL + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġt", "he", "Ġthe"]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] * len(SPECIAL) + [gguf.TokenType.NORMAL] * (len(tokens) - 3))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    head = HIDDEN // HEADS
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"{block}.attn_q.weight", weight(HIDDEN, HIDDEN))
        writer.add_tensor(f"{block}.attn_k.weight", weight(KV_HEADS * head, HIDDEN))
        writer.add_tensor(f"{block}.attn_v.weight", weight(KV_HEADS * head, HIDDEN))
        writer.add_tensor(f"{block}.attn_output.weight", weight(HIDDEN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(FFN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(FFN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(HIDDEN, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
