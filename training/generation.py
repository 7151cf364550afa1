"""Greedy answers from a causal LM over the prompt contract, for evaluation.

Serving has its own backend with dynamic batching; evaluation only needs a plain, batched,
deterministic `generate` so two models are compared on the same prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from training.dataset import render_prompt


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int = 160,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """One greedy answer per prompt (chat messages), in the order given."""
    import torch

    texts = [render_prompt(tokenizer, messages) for messages in prompts]
    # Similar lengths together: less padding, faster batches.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: list[str] = [""] * len(texts)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in chunk],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            with torch.inference_mode():
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            for i, tokens in zip(chunk, new_tokens, strict=True):
                answers[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            if progress is not None:
                progress(len(chunk))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return answers
