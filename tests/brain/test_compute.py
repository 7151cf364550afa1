"""One thread for model math while serving (`brain.compute`), fresh ones for long work."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Collection, Sequence

import pytest

from brain import compute
from brain.answering.batching import ContinuousBatcher


class RecordingModel:
    """A step model that answers 7, 7, 7, ... and records which thread ran each call."""

    slots = 2
    max_tokens = 1000

    def __init__(self, step_seconds: float = 0.0) -> None:
        self.threads: set[int] = set()
        self.step_seconds = step_seconds

    def prefill_chunk(
        self, slot: int, token_ids: list[int], done: int, chunk: int
    ) -> tuple[int, int | None]:
        self.threads.add(threading.get_ident())
        return len(token_ids), 7

    def decode(self, tokens: list[int], banned: Sequence[Collection[int]] = ()) -> list[int]:
        self.threads.add(threading.get_ident())
        time.sleep(self.step_seconds)
        return [7] * len(tokens)

    def move(self, source: int, target: int) -> None:
        self.threads.add(threading.get_ident())


def compute_thread_id() -> int:
    return compute.call(threading.get_ident)


def test_generation_steps_run_on_the_compute_thread() -> None:
    model = RecordingModel()
    batcher = ContinuousBatcher(model, stop_ids=set(), max_new_tokens=5)
    assert batcher.submit([1, 2, 3]).result(timeout=10) == [7] * 5
    assert batcher.submit([4, 5]).result(timeout=10) == [7] * 5
    assert model.threads == {compute_thread_id()}


async def test_other_model_work_runs_between_decode_steps() -> None:
    """A question's embedding must not wait for a whole answer to be written."""
    batcher = ContinuousBatcher(RecordingModel(step_seconds=0.01), set(), max_new_tokens=300)
    answer = asyncio.ensure_future(batcher.generate([1, 2, 3]))
    while batcher.stats.steps < 2:
        await asyncio.sleep(0.005)
    assert await compute.run(lambda: "embedded") == "embedded"
    assert not answer.done()  # came back between two steps of a 3 s answer
    answer.cancel()
    batcher.close()


def test_call_from_the_compute_thread_runs_directly_instead_of_deadlocking() -> None:
    assert compute.call(lambda: compute.call(lambda: 41) + 1) == 42


async def test_long_work_runs_apart_on_a_thread_that_ends_with_it() -> None:
    seen: list[threading.Thread] = []

    def load() -> str:
        seen.append(threading.current_thread())
        return "loaded"

    assert await compute.run_apart(load) == "loaded"
    assert seen[0] is not compute.call(threading.current_thread)
    seen[0].join(timeout=5)
    assert not seen[0].is_alive()  # its OpenMP team is gone with it


async def test_errors_of_work_run_apart_reach_the_caller() -> None:
    def broken() -> None:
        raise ValueError("model file is truncated")

    with pytest.raises(ValueError, match="truncated"):
        await compute.run_apart(broken)
