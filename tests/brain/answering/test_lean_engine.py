"""The lean Llama engine and continuous batching, on a tiny random Llama (fp32, exact)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest
import torch

from brain.answering.batching import ContinuousBatcher, GenerationError, repeating_tokens
from brain.answering.hf_generator import HFGenerator, HFOptions
from brain.answering.lean_engine import LlamaEngine, SplitInt8, supports
from brain.answering.model_loading import ModelLoadError, quantize_int8
from brain.prompt import build_messages
from tests.models import smollm_tokenizer, tiny_llama

__all__ = ["smollm_tokenizer"]

VOCAB = 300


def prompt(length: int, seed: int) -> list[int]:
    return torch.randint(
        3, VOCAB, (length,), generator=torch.Generator().manual_seed(seed)
    ).tolist()


def reference(model: Any, ids: list[int], new_tokens: int) -> list[int]:
    """transformers' own greedy decoding, the answer the engine must reproduce."""
    with torch.inference_mode():
        output = model.generate(
            torch.tensor([ids]),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return [int(token) for token in output[0, len(ids) :]]


def test_prefill_and_decode_reproduce_transformers_greedy_decoding() -> None:
    model = tiny_llama(VOCAB)
    engine = LlamaEngine(model, slots=2, max_tokens=64, int8=False)
    ids = prompt(11, seed=1)
    tokens = [engine.prefill(0, ids)]
    while len(tokens) < 12:
        tokens.append(engine.decode([tokens[-1]])[0])
    assert tokens == reference(model, ids, 12)


def test_rows_of_different_lengths_decode_together_exactly() -> None:
    model = tiny_llama(VOCAB)
    engine = LlamaEngine(model, slots=3, max_tokens=128, int8=False)
    prompts = [prompt(5, seed=2), prompt(23, seed=3), prompt(14, seed=4)]
    tokens = [[engine.prefill(row, ids)] for row, ids in enumerate(prompts)]
    for _ in range(9):
        for row, token in enumerate(engine.decode([t[-1] for t in tokens])):
            tokens[row].append(token)
    assert tokens == [reference(model, ids, 10) for ids in prompts]


def test_continuous_batching_admits_and_retires_rows_without_mixing_them_up() -> None:
    model = tiny_llama(VOCAB)
    # A 30-token window: the 22-token prompt may add 8 tokens, the 4-token one 20. The
    # short answer finishes first and the long one moves into its row mid-answer.
    engine = LlamaEngine(model, slots=2, max_tokens=30, int8=False)
    batcher = ContinuousBatcher(engine, stop_ids=set(), max_new_tokens=20)
    try:
        first = batcher.submit(prompt(22, seed=5))
        second = batcher.submit(prompt(4, seed=6))
        assert first.result(timeout=30) == reference(model, prompt(22, seed=5), 8)
        # A third prompt arrives while the second is still decoding and joins it.
        deadline = time.monotonic() + 30
        while batcher.stats.steps < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        third = batcher.submit(prompt(9, seed=7))
        assert second.result(timeout=30) == reference(model, prompt(4, seed=6), 20)
        assert third.result(timeout=30) == reference(model, prompt(9, seed=7), 20)
        assert batcher.stats.largest_batch == 2
        assert batcher.stats.prompt_tokens == 22 + 4 + 9
    finally:
        batcher.close()


def test_a_stop_token_ends_the_answer_and_is_not_part_of_it() -> None:
    model = tiny_llama(VOCAB)
    ids = prompt(8, seed=8)
    expected = reference(model, ids, 6)
    engine = LlamaEngine(model, slots=1, max_tokens=64, int8=False)
    batcher = ContinuousBatcher(engine, stop_ids={expected[3]}, max_new_tokens=20)
    try:
        answer = batcher.submit(ids).result(timeout=30)
        assert answer == expected[: expected.index(expected[3])]
    finally:
        batcher.close()


def test_bad_prompts_fail_alone_and_the_batcher_keeps_serving() -> None:
    model = tiny_llama(VOCAB)
    engine = LlamaEngine(model, slots=2, max_tokens=32, int8=False)
    batcher = ContinuousBatcher(engine, stop_ids=set(), max_new_tokens=4)
    try:
        with pytest.raises(GenerationError, match="leaves no room"):
            batcher.submit(prompt(32, seed=9)).result(timeout=30)
        with pytest.raises(GenerationError, match="prefill failed"):
            batcher.submit([5, VOCAB + 50]).result(timeout=30)  # no such token id
        ids = prompt(6, seed=10)
        assert batcher.submit(ids).result(timeout=30) == reference(model, ids, 4)
    finally:
        batcher.close()
    with pytest.raises(GenerationError, match="closed"):
        batcher.submit(prompt(6, seed=10)).result(timeout=30)


async def test_a_caller_that_stops_waiting_frees_its_row() -> None:
    model = tiny_llama(VOCAB)
    engine = LlamaEngine(model, slots=1, max_tokens=4096, int8=False)
    batcher = ContinuousBatcher(engine, stop_ids=set(), max_new_tokens=3000)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.generate(prompt(6, seed=11)), 0.2)
        # The only row is free again: a new prompt is answered long before 3000 steps.
        ids = prompt(6, seed=12)
        batcher.max_new_tokens = 3
        started = batcher.stats.steps
        assert await asyncio.wait_for(batcher.generate(ids), 30) == reference(model, ids, 3)
        assert batcher.stats.steps - started <= 5
    finally:
        batcher.close()


def test_int8_engine_stays_close_to_the_fp32_model() -> None:
    model = tiny_llama(VOCAB)
    fp32 = LlamaEngine(model, slots=1, max_tokens=64, int8=False)
    int8 = LlamaEngine(model, slots=1, max_tokens=64, int8=True)
    assert isinstance(int8.blocks[0].qkv, torch.ao.nn.quantized.dynamic.Linear)
    ids = prompt(16, seed=13)
    agree = sum(fp32.prefill(0, ids[:n]) == int8.prefill(0, ids[:n]) for n in range(4, 16))
    assert agree >= 9  # of 12 next-token predictions


def _decode_steps(engine: LlamaEngine, tokens: list[int], steps: int) -> list[list[int]]:
    out = []
    for _ in range(steps):
        tokens = engine.decode(tokens)
        out.append(tokens)
    return out


@pytest.mark.parametrize("smoothed", [False, True])
@pytest.mark.parametrize("lengths", [[9], [9, 17, 4]])
def test_the_scripted_int8_decode_step_gives_what_the_python_loop_gives(
    lengths: list[int], smoothed: bool
) -> None:
    """Int8 decode steps run as one TorchScript function; from the same cache, each row
    gets the same tokens and the cache the same keys and values as op by op."""
    engine = LlamaEngine(tiny_llama(VOCAB), slots=3, max_tokens=64, int8=True)
    assert engine.decode_step == "scripted"
    if smoothed:  # the divisors the norms carry when smoothing won (`LlamaEngine._smooth`)
        generator = torch.Generator().manual_seed(5)
        for block in engine.blocks:
            block.attention_scale = torch.rand(engine.hidden, generator=generator) + 0.5
            block.mlp_scale = torch.rand(engine.hidden, generator=generator) + 0.5
        engine.int8_scheme = "smoothed"
        engine._script_decode()
    first = [engine.prefill(row, prompt(n, seed=row)) for row, n in enumerate(lengths)]
    cache, start = [c.clone() for c in engine.cache], list(engine.lengths)
    scripted = _decode_steps(engine, first, steps=6)
    scripted_cache = [c.clone() for c in engine.cache]
    engine.cache, engine.lengths = cache, start
    compiled, engine._scripted = engine._scripted, None
    assert engine.decode_step == "python"
    python = _decode_steps(engine, first, steps=6)
    engine._scripted = compiled
    assert scripted == python
    for mine, theirs in zip(scripted_cache, engine.cache, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_a_scripted_step_that_fails_is_redone_op_by_op_and_not_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = LlamaEngine(tiny_llama(VOCAB), slots=2, max_tokens=64, int8=True)
    compiled = engine._scripted
    assert compiled is not None
    first = [engine.prefill(row, prompt(n, seed=row)) for row, n in enumerate([7, 12])]
    cache, start = [c.clone() for c in engine.cache], list(engine.lengths)
    expected = _decode_steps(engine, first, steps=3)

    def broken(*args: Any) -> torch.Tensor:
        compiled(*args)  # a failure half-way leaves this step's cache positions written
        raise RuntimeError("kernel failed")

    engine.cache, engine.lengths = cache, start
    engine._scripted = broken
    with caplog.at_level("WARNING"):
        assert _decode_steps(engine, first, steps=3) == expected
    assert engine.decode_step == "python"
    assert sum("scripted decode step failed" in r.getMessage() for r in caplog.records) == 1


def test_an_fp32_engine_decodes_op_by_op() -> None:
    assert LlamaEngine(tiny_llama(VOCAB), slots=1, max_tokens=32, int8=False).decode_step == (
        "python"
    )


def test_the_down_projection_takes_outlier_channels_out_of_int8_in_prompts() -> None:
    """silu(gate) * up has a few huge channels: one int8 scale for the whole input
    flattens the rest to zero. In prompts those channels go through fp32 and the rest
    keeps a fine scale; decode steps stay plain dynamic int8."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 64, bias=False)
    x = torch.randn(3, 256) * 0.05
    x[:, :4] = 20.0  # outlier channels, as in real down-projection inputs
    down = SplitInt8(linear, channels=torch.arange(4))
    with torch.no_grad():
        exact = linear(x)
        dynamic = quantize_int8(torch.nn.ModuleList([linear]))[0](x)
        prompt, step = down.prompt(x.clone()), down(x)
    error = float((prompt - exact).abs().mean())
    assert error < 0.2 * float((dynamic - exact).abs().mean())
    assert error < 0.01 * float(exact.abs().mean())
    assert torch.equal(step, dynamic)
    assert torch.equal(SplitInt8(linear).prompt(x.clone()), dynamic)  # no channels: plain


def test_calibration_finds_the_down_projections_outlier_channels() -> None:
    model = tiny_llama(VOCAB)
    with torch.no_grad():  # make channels 5 and 9 of every down input huge
        for layer in model.model.layers:
            layer.mlp.up_proj.weight[[5, 9]] *= 200
    calibration = [prompt(12, seed=3), prompt(12, seed=4)]
    engine = LlamaEngine(model, slots=1, max_tokens=32, int8=True, calibration=calibration)
    for block in engine.blocks:
        assert isinstance(block.down, SplitInt8) and block.down.channels is not None
        assert {5, 9} <= set(block.down.channels.tolist())
    plain = LlamaEngine(tiny_llama(VOCAB), slots=1, max_tokens=32, int8=True)
    assert all(block.down.channels is None for block in plain.blocks)


async def test_the_hf_generator_picks_the_lean_engine_for_llama_on_cpu(
    smollm_tokenizer: Any,
) -> None:
    vocab = len(smollm_tokenizer)
    options = HFOptions(int8=False, max_new_tokens=5)
    lean = HFGenerator(tiny_llama(vocab), smollm_tokenizer, "tiny@base", options)
    plain = HFGenerator(
        tiny_llama(vocab),
        smollm_tokenizer,
        "tiny@base",
        HFOptions(engine="generate", int8=False, max_new_tokens=5),
    )
    assert (lean.engine, plain.engine) == ("lean", "generate")
    questions = [
        build_messages("how long do returns take?", []),
        build_messages("can I pay with PayPal or a credit card, and is it safe?", []),
    ]
    try:
        assert await lean.generate(questions) == await plain.generate(questions)
    finally:
        await lean.aclose()
        await plain.aclose()

    quantised = quantize_int8(tiny_llama(vocab))
    assert supports(quantised) is not None
    fallback = HFGenerator(quantised, smollm_tokenizer, "tiny@base", HFOptions())
    assert fallback.engine == "generate"
    await fallback.aclose()
    with pytest.raises(ModelLoadError, match="DESKMATE_MODEL_ENGINE=lean"):
        HFGenerator(quantised, smollm_tokenizer, "tiny@base", HFOptions(engine="lean"))


def test_a_shared_prompt_start_is_reused_and_gives_the_same_answer() -> None:
    model = tiny_llama(VOCAB)
    engine = LlamaEngine(model, slots=2, max_tokens=128, int8=False)
    start = prompt(20, seed=14)
    first, second, third = (start + prompt(n, seed=s) for n, s in ((7, 15), (12, 16), (5, 17)))
    for ids in (first, second, third):
        tokens = [engine.prefill(1, ids)]
        while len(tokens) < 6:
            tokens.append(engine.decode([0, tokens[-1]])[1])  # row 0 decodes alongside
        assert tokens == reference(model, ids, 6)
    # The first prompt had nothing to share with; the third reused the 20 shared tokens.
    assert engine.reused_tokens == 20


def test_closing_finishes_the_answers_in_flight_and_refuses_new_ones() -> None:
    model = tiny_llama(VOCAB)
    engine = LlamaEngine(model, slots=2, max_tokens=256, int8=False)
    batcher = ContinuousBatcher(engine, stop_ids=set(), max_new_tokens=40)
    ids = prompt(6, seed=18)
    in_flight = batcher.submit(ids)
    batcher.close()
    assert in_flight.result(timeout=30) == reference(model, ids, 40)
    with pytest.raises(GenerationError, match="closed"):
        batcher.submit(ids).result(timeout=30)


def test_smoothing_moves_activation_peaks_into_the_weights_without_changing_answers() -> None:
    model = tiny_llama(VOCAB)
    calibration = [prompt(30, seed=19), prompt(25, seed=20)]
    smoothed = LlamaEngine(model, slots=1, max_tokens=64, int8=False, calibration=calibration)
    scale = smoothed.blocks[0].attention_scale
    assert scale is not None and not torch.allclose(scale, torch.ones_like(scale))
    assert smoothed.reused_tokens == 0 and smoothed.lengths == [0]  # calibration left no trace
    ids = prompt(9, seed=21)
    tokens = [smoothed.prefill(0, ids)]
    while len(tokens) < 8:
        tokens.append(smoothed.decode([tokens[-1]])[0])
    assert tokens == reference(model, ids, 8)


def test_a_prompt_run_in_chunks_gives_the_same_answer() -> None:
    model = tiny_llama(VOCAB)
    engine = LlamaEngine(model, slots=2, max_tokens=128, int8=False)
    ids = prompt(37, seed=22)
    done, token = 0, None
    while token is None:
        done, token = engine.prefill_chunk(1, ids, done, 8)
        assert done == len(ids) or token is None
    tokens = [token]
    while len(tokens) < 6:
        tokens.append(engine.decode([0, tokens[-1]])[1])
    assert tokens == reference(model, ids, 6)


def test_a_new_prompt_is_read_in_chunks_while_the_others_keep_decoding() -> None:
    model = tiny_llama(VOCAB)
    first_ids, long_ids, third_ids = prompt(92, seed=23), prompt(64, seed=24), prompt(7, seed=25)
    # On a loaded machine this thread may wake only after the first answer has ended, and
    # the long prompt then has nobody to interleave with: such a round is run again.
    for _ in range(10):
        steps = _interleaving(model, first_ids, long_ids, third_ids)
        if steps is not None:
            # The first conversation decoded between the chunks until its answer ended.
            assert steps >= 5
            return
    pytest.fail("the long prompt was never submitted while the first answer was decoding")


def _interleaving(
    model: Any, first_ids: list[int], long_ids: list[int], third_ids: list[int]
) -> int | None:
    """Decode steps between submitting the long prompt and its first token; None when it
    was submitted too late (the first answer had ended)."""
    # A 100-token window: the 92-token prompt may add 8 tokens, so it finishes while the
    # 64-token prompt is still being read and that prompt's half-filled row moves down.
    engine = LlamaEngine(model, slots=3, max_tokens=100, int8=False)
    batcher = ContinuousBatcher(engine, stop_ids=set(), max_new_tokens=30, prefill_chunk=4)
    steps_at: dict[str, int] = {}
    try:
        first = batcher.submit(first_ids)
        deadline = time.monotonic() + 30
        while batcher.stats.steps < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        steps_at["long submitted"] = batcher.stats.steps

        def first_token(_: int) -> None:
            steps_at.setdefault("long", batcher.stats.steps)

        long = batcher.submit(long_ids, listener=first_token)
        third = batcher.submit(third_ids)
        assert first.result(timeout=30) == reference(model, first_ids, 8)
        assert long.result(timeout=30) == reference(model, long_ids, 30)
        assert third.result(timeout=30) == reference(model, third_ids, 30)
        if steps_at["long submitted"] > 2:
            return None
        return steps_at["long"] - steps_at["long submitted"]
    finally:
        batcher.close()


async def test_tokens_stream_as_they_are_decoded() -> None:
    model = tiny_llama(VOCAB)
    engine = LlamaEngine(model, slots=2, max_tokens=128, int8=False)
    batcher = ContinuousBatcher(engine, stop_ids=set(), max_new_tokens=12)
    try:
        ids = prompt(9, seed=26)
        seen_steps = []
        streamed = []
        async for token in batcher.stream(ids):
            streamed.append(token)
            seen_steps.append(batcher.stats.steps)
        assert streamed == reference(model, ids, 12)
        assert seen_steps[0] < seen_steps[-1]  # the first token came before the answer ended
        # Leaving early frees the row: the next answer is not held behind the rest.
        async for _ in batcher.stream(prompt(9, seed=27)):
            break
        assert await asyncio.wait_for(batcher.generate(ids), 30) == streamed
    finally:
        batcher.close()


async def test_the_hf_generator_streams_the_answer_it_generates(smollm_tokenizer: Any) -> None:
    options = HFOptions(int8=False, max_new_tokens=8)
    generator = HFGenerator(tiny_llama(len(smollm_tokenizer)), smollm_tokenizer, "t@b", options)
    try:
        messages = build_messages("how do returns work?", [])
        [whole] = await generator.generate([messages])
        pieces = [piece async for piece in generator.stream(messages)]
        assert "".join(pieces) == whole
    finally:
        await generator.aclose()


def bigrams(tokens: list[int]) -> list[tuple[int, int]]:
    return list(pairwise(tokens))


def test_repeating_tokens_are_the_ones_that_would_close_a_repeated_ngram() -> None:
    assert repeating_tokens([1, 2, 3, 1, 2], 3) == {3}
    assert repeating_tokens([1, 2, 3, 1, 2], 2) == {3}
    assert repeating_tokens([5, 6, 5, 7, 5], 2) == {6, 7}
    assert repeating_tokens([1, 2, 3], 3) == set()
    assert repeating_tokens([1, 2], 0) == set()


def test_an_answer_never_repeats_a_run_of_tokens_of_its_own() -> None:
    model = tiny_llama(VOCAB)
    ids = prompt(6, seed=12)
    free = reference(model, ids, 60)
    repeats = [n for n, pair in enumerate(bigrams(free)) if pair in bigrams(free)[:n]]
    assert repeats, "the tiny model should repeat itself within 60 tokens"
    engine = LlamaEngine(model, slots=1, max_tokens=128, int8=False)
    batcher = ContinuousBatcher(engine, stop_ids=set(), max_new_tokens=60, no_repeat_ngram=2)
    try:
        answer = batcher.submit(ids).result(timeout=30)
    finally:
        batcher.close()
    assert len(set(bigrams(answer))) == len(bigrams(answer)) == 59
    # Up to the first repetition the ban changes nothing.
    first = repeats[0] + 1  # index of the token that closed the first repeated pair
    assert answer[:first] == free[:first] and answer[first] != free[first]


async def test_both_engines_ban_the_same_repetitions(smollm_tokenizer: Any) -> None:
    vocab = len(smollm_tokenizer)
    options = HFOptions(int8=False, max_new_tokens=40, no_repeat_ngram=1)
    lean = HFGenerator(tiny_llama(vocab), smollm_tokenizer, "tiny@base", options)
    plain = HFGenerator(
        tiny_llama(vocab), smollm_tokenizer, "tiny@base", replace(options, engine="generate")
    )
    question = [build_messages("where is my order?", [])]
    try:
        (answer,) = await lean.generate(question)
        assert [answer] == await plain.generate(question)
    finally:
        await lean.aclose()
        await plain.aclose()
    tokens = smollm_tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert len(tokens) >= 30 and len(set(tokens)) >= len(tokens) - 2  # re-tokenising may merge
