"""The hf generator on a tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from brain.answering.batching import BatchingOptions
from brain.answering.hf_generator import HFGenerator, HFOptions, apply_adapter
from brain.answering.model_loading import ModelLoadError, peft_quietly, quantize_int8
from brain.prompt import Messages, Passage, build_messages
from tests.models import smollm_tokenizer, tiny_llama

__all__ = ["smollm_tokenizer"]


def prompts() -> list[Messages]:
    # Different lengths, so the batch needs padding.
    return [
        build_messages("how long do returns take?", [Passage("Returns", "30 days.")]),
        build_messages(
            "can I pay with PayPal or with a credit card, and is it safe?",
            [Passage("Payment", "We accept Visa, Mastercard and PayPal. " * 3)],
        ),
        build_messages("hi", []),
        build_messages("where is my parcel", [Passage("Tracking", "Use the tracking link.")]),
    ]


def make_generator(tokenizer: Any, **batching: Any) -> HFGenerator:
    options = HFOptions(
        engine="generate", int8=False, max_new_tokens=6, batching=BatchingOptions(**batching)
    )
    return HFGenerator(tiny_llama(len(tokenizer)), tokenizer, "tiny@base", options)


async def test_concurrent_requests_are_served_by_one_batched_generate(
    smollm_tokenizer: Any,
) -> None:
    generator = make_generator(smollm_tokenizer, max_batch=8, window_s=0.2)
    try:
        batched = await asyncio.gather(*(generator.generate([p]) for p in prompts()))
        assert generator.generate_calls == 1
        # Left padding is right: each prompt alone gives the same greedy output.
        alone = [generator.generate_batch([p])[0] for p in prompts()]
        assert [texts[0] for texts in batched] == alone
        assert all(alone)
    finally:
        await generator.aclose()


async def test_batches_are_capped_at_the_maximum_size(smollm_tokenizer: Any) -> None:
    generator = make_generator(smollm_tokenizer, max_batch=2, window_s=0.2)
    try:
        texts = await generator.generate(prompts() + prompts()[:1])
        assert len(texts) == 5
        assert generator.generate_calls == 3
    finally:
        await generator.aclose()


def test_left_padding_is_set_and_prompts_use_the_chat_template(smollm_tokenizer: Any) -> None:
    generator = make_generator(smollm_tokenizer)
    assert generator.tokenizer.padding_side == "left"
    messages = prompts()[0]
    counted = generator.count_tokens(messages)
    text = smollm_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert counted == len(smollm_tokenizer(text, add_special_tokens=False)["input_ids"])


def test_int8_quantisation_replaces_linear_layers_and_still_generates(
    smollm_tokenizer: Any,
) -> None:
    model = quantize_int8(tiny_llama(len(smollm_tokenizer)))
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(model.model.layers[0].mlp.gate_proj, dynamic_linear)
    assert isinstance(model.lm_head, dynamic_linear)
    generator = HFGenerator(model, smollm_tokenizer, "tiny@base", HFOptions(max_new_tokens=4))
    assert len(generator.generate_batch(prompts()[:2])) == 2


async def test_from_model_serves_a_model_in_memory_as_load_does(smollm_tokenizer: Any) -> None:
    """Training evaluates through this: the engine serving would pick, the caller's
    tokenizer untouched, int8 on a copy where `generate` serves on CPU."""
    tokenizer = copy.deepcopy(smollm_tokenizer)
    tokenizer.padding_side = "right"
    lean = HFGenerator.from_model(
        tiny_llama(len(tokenizer)), tokenizer, "tiny@new", HFOptions(int8=False)
    )
    model = tiny_llama(len(tokenizer))
    plain = HFGenerator.from_model(model, tokenizer, "tiny@new", HFOptions(engine="generate"))
    try:
        assert (lean.engine, plain.engine) == ("lean", "generate")
        assert tokenizer.padding_side == "right" and plain.tokenizer.padding_side == "left"
        assert isinstance(plain.model.lm_head, torch.ao.nn.quantized.dynamic.Linear)
        assert isinstance(model.lm_head, torch.nn.Linear)
        # Both engines stop on the same tokens, the tokenizer's end of turn among them.
        assert tokenizer.eos_token_id in lean.stop_ids and plain.stop_ids == lean.stop_ids
    finally:
        await lean.aclose()
        await plain.aclose()


def save_tiny(tmp_path: Path, tokenizer: Any) -> Path:
    directory = tmp_path / "tiny-llama"
    tiny_llama(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_a_lora_adapter_is_merged_and_named_in_the_version(
    tmp_path: Path, smollm_tokenizer: Any
) -> None:
    from peft import LoraConfig, get_peft_model

    base_dir = save_tiny(tmp_path, smollm_tokenizer)
    with peft_quietly():
        peft_model = get_peft_model(
            tiny_llama(len(smollm_tokenizer)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
        )
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.5)  # LoRA B starts at zero; make the adapter do something
    adapter_dir = tmp_path / "adapters" / "v3"
    peft_model.save_pretrained(str(adapter_dir))

    base = tiny_llama(len(smollm_tokenizer))
    base_weight = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    merged = apply_adapter(tiny_llama(len(smollm_tokenizer)), adapter_dir)
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base_weight)
    assert torch.equal(
        merged.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight
    )

    generator = HFGenerator.load(
        str(base_dir), tmp_path, HFOptions(device="cpu", int8=False), adapter=adapter_dir
    )
    assert generator.version == "tiny-llama@v3"
    plain = HFGenerator.load(str(base_dir), tmp_path, HFOptions(device="cpu"))
    assert plain.version == "tiny-llama@base"


def test_a_model_that_cannot_be_loaded_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="DESKMATE_MODEL"):
        HFGenerator.load(str(tmp_path / "no-such-model"), tmp_path, HFOptions(device="cpu"))
