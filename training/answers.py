"""Greedy answers from a causal LM over the prompt contract, for evaluation.

On CPU, Llama-architecture models are answered the way they are served: the lean engine
under continuous batching (int8 unless asked otherwise), which is also several times
faster than `generate`. Elsewhere (GPU, other architectures) a plain, batched,
deterministic `generate`, so two models are compared on the same prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from brain.prompt import render_prompt


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int = 160,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
    int8: bool = True,
) -> list[str]:
    """One greedy answer per prompt (chat messages), in the order given."""
    import torch

    from brain.answering.lean_engine import supports

    texts = [render_prompt(tokenizer, messages) for messages in prompts]
    device = next(model.parameters()).device
    if device.type == "cpu" and supports(model) is None:
        return _lean_answers(model, tokenizer, texts, max_new_tokens, int8, progress)
    # Similar lengths together: less padding, faster batches.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: list[str] = [""] * len(texts)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
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


def _lean_answers(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_new_tokens: int,
    int8: bool,
    progress: Callable[[int], None] | None,
) -> list[str]:
    """Answers from the lean engine with continuous batching (16 rows)."""
    from brain.answering.batching import ContinuousBatcher
    from brain.answering.hf_generator import calibration_prompts, stop_ids
    from brain.answering.lean_engine import LlamaEngine

    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    window = getattr(model.config, "max_position_embeddings", None) or 2048
    longest = max((len(ids) for ids in encoded), default=0)
    engine = LlamaEngine(
        model,
        slots=16,
        max_tokens=min(window, longest + max_new_tokens),
        int8=int8,
        calibration=calibration_prompts(tokenizer) if int8 else (),
    )
    batcher = ContinuousBatcher(engine, stop_ids(model, tokenizer), max_new_tokens)
    try:
        futures = [batcher.submit(ids) for ids in encoded]
        answers = []
        for future in futures:
            answers.append(tokenizer.decode(future.result(), skip_special_tokens=True).strip())
            if progress is not None:
                progress(1)
    finally:
        batcher.close()
    return answers
