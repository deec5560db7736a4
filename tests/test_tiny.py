"""The tiny model is built deterministically, cached, and behaves like a chat model."""
from medgrpo.tiny import ensure_tiny_model


def test_tiny_model_is_cached_and_deterministic(tiny_model_dir, tmp_path):
    assert ensure_tiny_model(tiny_model_dir.parent) == tiny_model_dir  # second call: cache hit
    rebuilt = ensure_tiny_model(tmp_path)
    assert rebuilt.name == tiny_model_dir.name
    assert (rebuilt / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()


def test_tiny_tokenizer_renders_chat_and_round_trips(tiny_tokenizer):
    messages = [{"role": "system", "content": "Respond in <reasoning> and <answer> tags."},
                {"role": "user", "content": "Is aspirin an NSAID? Answer yes, no or maybe."}]
    text = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.padding_side == "left" and tiny_tokenizer.pad_token_id != tiny_tokenizer.eos_token_id
    answer = tiny_tokenizer.encode("<answer>", add_special_tokens=False)
    assert len(answer) == 1  # format tags are single tokens, like <think> in real reasoning models
