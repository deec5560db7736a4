"""The transformers engine: batched left-padded generation must equal one-by-one generation."""
import pytest
import torch

from medgrpo.evaluation.engine import HFEngine, Sampling


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def prompts(tokenizer):
    questions = ["What is 7 x 8?", "Is metformin first-line therapy for type 2 diabetes in adults without "
                 "contraindications? Answer yes or no.", "Which vitamin deficiency causes scurvy?"]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                           tokenize=False) for q in questions]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_batched_generation_equals_single_generation(tiny_model, tiny_tokenizer):
    sequences = prompts(tiny_tokenizer)
    batched = HFEngine(tiny_model, tiny_tokenizer, batch_size=8).generate(sequences, 12, [], Sampling())
    single = HFEngine(tiny_model, tiny_tokenizer, batch_size=1).generate(sequences, 12, [], Sampling())
    assert [g.tokens for g in batched] == [g.tokens for g in single]
    assert all(len(g.tokens) <= 12 for g in batched)


def test_stop_string_ends_generation_after_the_string(tiny_model, tiny_tokenizer):
    sequences = prompts(tiny_tokenizer)
    engine = HFEngine(tiny_model, tiny_tokenizer, batch_size=4)
    free = engine.generate(sequences, 24, [], Sampling())
    # Use a piece of what the model actually writes as the stop string, so the stop is sure to happen; not one
    # starting with whitespace, which could also match across the end of the prompt.
    pieces = [tiny_tokenizer.decode(free[0].tokens[i:i + 2]) for i in range(2, 20)]
    stop = next(p for p in pieces if p[:1].strip() and p not in tiny_tokenizer.decode(free[0].tokens[:2]))
    stopped = engine.generate(sequences, 24, [stop], Sampling())
    text = tiny_tokenizer.decode(stopped[0].tokens)
    assert text.endswith(stop) and text.count(stop) == 1 and not stopped[0].ended


def test_generation_restores_the_training_mode(tiny_model, tiny_tokenizer):
    # During training TRL files its logs under "train" only while the model is in training mode.
    tiny_model.train()
    HFEngine(tiny_model, tiny_tokenizer, batch_size=4).generate(prompts(tiny_tokenizer)[:1], 2, [], Sampling())
    assert tiny_model.training
    tiny_model.eval()
