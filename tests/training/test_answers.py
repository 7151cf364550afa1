"""Held-out answers come from the serving generator, on both of its engines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from brain.answering.hf_generator import HFGenerator, HFOptions
from brain.prompt import Messages, Passage, build_messages
from tests.models import tiny_llama
from training.answers import generate_answers


def prompts() -> list[Messages]:
    # Different lengths, so `generate`'s batches need padding.
    return [
        build_messages("can I pay with PayPal?", [Passage("Payment", "Visa and PayPal. " * 4)]),
        build_messages("hi", []),
        build_messages("how long do returns take?", [Passage("Returns", "30 days.")]),
        build_messages("where is my parcel", [Passage("Tracking", "Use the tracking link.")]),
    ]


def tiny_qwen2(vocab_size: int) -> Any:
    """A tiny random model of another architecture: the lean engine does not run it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Records the serving generators training builds and the prompts they are asked."""
    seen: dict[str, list[Any]] = {"generators": [], "prompts": []}
    from_model, generate = HFGenerator.from_model, HFGenerator.generate

    def spy_from_model(*args: Any, **kwargs: Any) -> HFGenerator:
        generator = from_model(*args, **kwargs)
        seen["generators"].append(generator)
        return generator

    async def spy_generate(self: HFGenerator, batch: list[Messages]) -> list[str]:
        seen["prompts"].extend(batch)
        return await generate(self, batch)

    monkeypatch.setattr(HFGenerator, "from_model", spy_from_model)
    monkeypatch.setattr(HFGenerator, "generate", spy_generate)
    return seen


def test_llama_on_cpu_is_answered_by_the_lean_engine_as_served(
    smollm_tokenizer: Any, served: dict[str, list[Any]]
) -> None:
    model = tiny_llama(len(smollm_tokenizer))
    padding_side = smollm_tokenizer.padding_side
    steps: list[int] = []
    answers = generate_answers(
        model, smollm_tokenizer, prompts(), max_new_tokens=6, int8=False, progress=steps.append
    )

    (generator,) = served["generators"]
    assert generator.engine == "lean" and generator.options.batching.max_batch == 16
    assert sorted(map(str, served["prompts"])) == sorted(map(str, prompts()))
    assert steps == [1, 1, 1, 1]  # one tick per answer, as it is done
    assert smollm_tokenizer.padding_side == padding_side  # the caller's tokenizer is left alone

    options = HFOptions(int8=False, max_new_tokens=6)
    serving = HFGenerator.from_model(model, smollm_tokenizer, "tiny@base", options)

    async def served_answers() -> list[str]:
        try:
            return await serving.generate(prompts())
        finally:
            await serving.aclose()

    assert answers == asyncio.run(served_answers())
    assert all(answers)


def test_other_models_are_answered_by_batched_generate_as_served(
    smollm_tokenizer: Any, served: dict[str, list[Any]]
) -> None:
    model = tiny_qwen2(len(smollm_tokenizer))
    answers = generate_answers(
        model, smollm_tokenizer, prompts(), max_new_tokens=6, batch_size=2, int8=False
    )

    (generator,) = served["generators"]
    assert generator.engine == "generate" and generator.generate_calls == 2
    # Left padding is right: each prompt alone gives the same greedy answer.
    alone = [generator.generate_batch([messages])[0] for messages in prompts()]
    assert answers == alone and all(answers)


def test_int8_evaluation_quantises_where_serving_does(
    smollm_tokenizer: Any, served: dict[str, list[Any]]
) -> None:
    model = tiny_qwen2(len(smollm_tokenizer))
    generate_answers(model, smollm_tokenizer, prompts()[:1], max_new_tokens=2, int8=True)
    (generator,) = served["generators"]
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(generator.model.model.layers[0].mlp.gate_proj, dynamic_linear)
    assert isinstance(model.model.layers[0].mlp.gate_proj, torch.nn.Linear)  # a copy
