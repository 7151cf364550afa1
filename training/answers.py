"""Held-out answers for the evaluation, written by the serving `hf` generator.

Training does not decode on its own: it wraps the model in memory in `HFGenerator`, the
code that answers customers, so evaluation measures what serving would say. The same
engine is chosen (on CPU, Llama models run on the lean engine under continuous batching,
int8 unless asked otherwise; on GPU and for other architectures transformers' `generate`
over dynamically batched prompts), with the same greedy decoding, stop tokens and
prompt rendering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from brain.answering.batching import BatchingOptions
from brain.answering.hf_generator import HFGenerator, HFOptions, lean_engine_fits
from brain.prompt import Messages

LEAN_ROWS = 16  # conversations the lean engine decodes together


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    *,
    max_new_tokens: int = 160,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
    int8: bool = True,
    version: str = "evaluation",
) -> list[str]:
    """One greedy answer per prompt (chat messages), in the order given.

    `batch_size` is how many prompts share one `generate` call (the lean engine decodes
    16 together); `progress` is called with 1 as each answer is done; `version` names the
    model in generation errors. Runs its own event loop: call it from synchronous code.
    """
    # Held-out prompts are not trimmed to a serving budget: the model's window bounds them.
    window = getattr(model.config, "max_position_embeddings", None) or HFOptions().context_tokens
    options = HFOptions(int8=int8, max_new_tokens=max_new_tokens, context_tokens=window)
    rows = LEAN_ROWS if lean_engine_fits(model, options) else batch_size
    options = replace(options, batching=BatchingOptions(max_batch=rows))
    generator = HFGenerator.from_model(model, tokenizer, version, options)
    return asyncio.run(_answer_all(generator, prompts, progress))


async def _answer_all(
    generator: HFGenerator,
    prompts: Sequence[Messages],
    progress: Callable[[int], None] | None,
) -> list[str]:
    """Every prompt submitted at once, as concurrent conversations; closes `generator`."""

    async def answer(messages: Messages) -> str:
        (text,) = await generator.generate([messages])
        if progress is not None:
            progress(1)
        return text

    # Similar lengths together: less padding in `generate`'s batches.
    order = sorted(range(len(prompts)), key=lambda i: generator.count_tokens(prompts[i]))
    try:
        texts = await asyncio.gather(*(answer(prompts[i]) for i in order))
    finally:
        await generator.aclose()
    answers = [""] * len(prompts)
    for i, text in zip(order, texts, strict=True):
        answers[i] = text
    return answers
