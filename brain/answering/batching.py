"""The generator interface behind generative answers, and dynamic batching.

A `Generator` turns a batch of chat prompts into texts: `hf` runs a transformers model
in-process, `openai` calls an OpenAI-compatible server. Two ways to serve concurrent
conversations together, both off the event loop:

- `DynamicBatcher` merges requests into one batched call: the first request opens a short
  gather window, everything that arrives within it (up to a maximum batch size) runs
  together on the compute thread (`brain.compute`; used with transformers' `generate`).
- `ContinuousBatcher` schedules requests onto the rows of a `StepModel` one decode step
  at a time: a new prompt joins between steps (its prompt computed in chunks, each
  followed by a step of the others), a finished answer leaves at once, so nobody waits for
  the longest answer in a batch or for someone else's prompt (used with the lean Llama
  engine). `ContinuousBatcher.stream` yields an answer's tokens as they are decoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from prometheus_client import Histogram

from brain import compute
from brain.prompt import Messages

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "deskmate_generation_batch_size",
    "Prompts served by one batched generate call",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
STEP_SECONDS = Histogram(
    "deskmate_generation_step_seconds",
    "Wall time of one continuous-batching decode step (all active conversations)",
    buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32),
)
BATCH_SECONDS = Histogram(
    "deskmate_generation_batch_seconds",
    "Wall time of one batched generate call",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)


class GenerationError(RuntimeError):
    """Generation failed (model error, server down, timeout); callers fall back."""


class Generator(Protocol):
    """Writes the assistant's next message for each prompt.

    `version` names the model (and adapter) for transcripts; `context_tokens` is the
    prompt budget and `count_tokens` measures a prompt against it.
    """

    version: str
    context_tokens: int

    def count_tokens(self, messages: Messages) -> int: ...

    async def generate(self, prompts: Sequence[Messages]) -> list[str]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    """How concurrent requests are merged: wait up to `window_s` for up to `max_batch`."""

    max_batch: int = 16
    window_s: float = 0.01


P = TypeVar("P")


@dataclass(slots=True)
class _Request(Generic[P]):
    prompt: P
    future: asyncio.Future[str]


class DynamicBatcher(Generic[P]):
    """Serves single prompts through a blocking batch function, batching concurrent ones.

    `run_batch` is called on the compute thread (`brain.compute`), one batch at a time (a
    model is not safe to call concurrently, and one big batch beats two small ones); while
    a batch runs, new requests queue up for the next.
    """

    def __init__(self, run_batch: Callable[[list[P]], list[str]], options: BatchingOptions) -> None:
        self._run_batch = run_batch
        self.options = options
        self._queue: asyncio.Queue[_Request[P]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0

    async def submit(self, prompt: P) -> str:
        """The generated text for `prompt`, possibly computed in a batch with others."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._serve(self._queue), name="deskmate-batcher")
        assert self._queue is not None
        future: asyncio.Future[str] = loop.create_future()
        await self._queue.put(_Request(prompt, future))
        return await future

    async def _serve(self, queue: asyncio.Queue[_Request[P]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.options.window_s
            while len(batch) < self.options.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            # Requests whose caller went away (timeouts, cancelled handlers) are skipped.
            batch = [request for request in batch if not request.future.done()]
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Request[P]]) -> None:
        started = time.perf_counter()
        try:
            texts = await compute.run(self._run_batch, [request.prompt for request in batch])
            if len(texts) != len(batch):
                raise GenerationError(f"{len(texts)} texts for a batch of {len(batch)}")
        except Exception as exc:
            log.exception("batched generation of %d prompts failed", len(batch))
            error = exc if isinstance(exc, GenerationError) else GenerationError(str(exc))
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        finally:
            self.batches_run += 1
            BATCH_SIZE.observe(len(batch))
            BATCH_SECONDS.observe(time.perf_counter() - started)
        for request, text in zip(batch, texts, strict=True):
            if not request.future.done():
                request.future.set_result(text)

    async def aclose(self) -> None:
        """Stop the gather loop (the running batch finishes)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._worker


class StepModel(Protocol):
    """A model decoded one step at a time over `slots` cache rows (greedy).

    `prefill_chunk` runs up to `chunk` more positions of a prompt into a row that holds
    its first `done` (0: a new prompt) and returns the positions now in the row and, once
    the prompt is complete, its first token; `decode` feeds one token to each of rows
    0..n-1 and returns their next tokens, never one of `banned[row]` (when given); `move`
    copies a row's cache into another row, so the active rows stay 0..n-1.
    """

    slots: int
    max_tokens: int

    def prefill_chunk(
        self, slot: int, token_ids: list[int], done: int, chunk: int
    ) -> tuple[int, int | None]: ...

    def decode(self, tokens: list[int], banned: Sequence[Collection[int]] = ()) -> list[int]: ...

    def move(self, source: int, target: int) -> None: ...


@dataclass(slots=True)
class DecodeStats:
    """Where a `ContinuousBatcher`'s time went: prompts (prefill) vs decode steps."""

    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    steps: int = 0
    decoded_tokens: int = 0
    decode_seconds: float = 0.0
    largest_batch: int = 0
    seconds_by_rows: dict[int, float] = field(default_factory=dict)  # decode time per batch size
    steps_by_rows: dict[int, int] = field(default_factory=dict)

    def add_step(self, rows: int, seconds: float) -> None:
        self.steps += 1
        self.decoded_tokens += rows
        self.decode_seconds += seconds
        self.largest_batch = max(self.largest_batch, rows)
        self.seconds_by_rows[rows] = self.seconds_by_rows.get(rows, 0.0) + seconds
        self.steps_by_rows[rows] = self.steps_by_rows.get(rows, 0) + 1

    def rate_at(self, rows: int) -> float | None:
        """Decode tokens/s over the steps that ran exactly `rows` rows (None: no such step)."""
        seconds = self.seconds_by_rows.get(rows)
        return rows * self.steps_by_rows[rows] / seconds if seconds else None


TokenListener = Callable[[int], None]


def repeating_tokens(generated: Sequence[int], n: int) -> set[int]:
    """The next tokens that would repeat an n-gram `generated` already holds (its last
    n-1 tokens seen before, followed by them): banning them keeps a small model from
    saying the same thing twice ("clean and clean", a sentence repeated). Only the answer
    counts, not the prompt, so a phrase of the knowledge can still be taken over once."""
    tokens = list(generated)
    if n < 1 or len(tokens) < n:
        return set()
    if n == 1:
        return set(tokens)
    tail = tokens[len(tokens) - n + 1 :]
    return {
        tokens[start + n - 1]
        for start in range(len(tokens) - n + 1)
        if tokens[start] == tail[0] and tokens[start : start + n - 1] == tail
    }


@dataclass(slots=True)
class _Sequence:
    prompt: list[int]
    limit: int
    future: concurrent.futures.Future[list[int]]
    listener: TokenListener | None = None  # called on the compute thread with each token
    generated: list[int] = field(default_factory=list)
    prefilled: int = 0  # prompt positions in the model's row so far
    abandoned: bool = False  # the caller stopped waiting (timeout, cancelled handler)


class ContinuousBatcher:
    """Greedy generation for many prompts at once, scheduled step by step.

    The model runs on the compute thread (`brain.compute`), one turn at a time. Each
    turn runs the next chunk of one waiting prompt (prefill) into the row after the
    active ones, then decodes one token for every active row, and retires rows that
    produced a stop token, reached their token limit, or whose caller stopped waiting. A
    prompt alone is computed in one go; beside running conversations, `prefill_chunk`
    tokens at a time, so their answers keep coming while it is read. Other model work
    submitted meanwhile runs between turns. Results are the generated token ids, without
    the stop token.
    """

    # Prompt tokens read between two decode steps of running conversations: a pause of
    # about 0.1 s for them. At 64, 16 conversations read prompts 20-40 % slower (int8
    # matmuls pay per call and grow more efficient with rows) and waited 3.3 s instead of
    # 1.1-1.5 s (p50) for their first token (README, *Dialogue model*).
    PREFILL_CHUNK = 128

    def __init__(
        self,
        model: StepModel,
        stop_ids: set[int],
        max_new_tokens: int,
        prefill_chunk: int = PREFILL_CHUNK,
        no_repeat_ngram: int = 0,
    ) -> None:
        self.model = model
        self.stop_ids = stop_ids
        self.max_new_tokens = max_new_tokens
        self.prefill_chunk = prefill_chunk
        self.no_repeat_ngram = no_repeat_ngram  # 0: any n-gram may repeat
        self._incoming: queue.SimpleQueue[_Sequence] = queue.SimpleQueue()
        self._active: list[_Sequence] = []  # rows 0..n-1, decoding
        self._filling: _Sequence | None = None  # the prompt being prefilled, in row len(active)
        self._lock = threading.Lock()
        self._scheduled = False  # a turn is queued or running on the compute thread
        self._closed = False
        self.stats = DecodeStats()

    def submit(
        self, prompt: list[int], listener: TokenListener | None = None
    ) -> concurrent.futures.Future[list[int]]:
        """Queue `prompt` (token ids); the future resolves to the generated token ids.
        `listener`, if given, is called on the compute thread with each token as it comes."""
        return self._enqueue(prompt, listener).future

    async def generate(self, prompt: list[int]) -> list[int]:
        """The generated token ids for `prompt`; cancelling frees its row at the next step."""
        sequence = self._enqueue(prompt)
        try:
            return await asyncio.wrap_future(sequence.future)
        except asyncio.CancelledError:
            sequence.abandoned = True
            raise

    async def stream(self, prompt: list[int]) -> AsyncIterator[int]:
        """The generated token ids for `prompt`, each as soon as it is decoded (for
        channels that show an answer while it is written). Raises `GenerationError` at
        the end if generation failed; leaving the loop early frees the row."""
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[int | None] = asyncio.Queue()

        def put(token: int | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(tokens.put_nowait, token)

        sequence = self._enqueue(prompt, put)
        # Tokens and the end marker are queued from one thread, so the end comes last.
        sequence.future.add_done_callback(lambda _: put(None))
        try:
            while (token := await tokens.get()) is not None:
                yield token
            sequence.future.result()  # raises what generation raised
        finally:
            if not sequence.future.done():
                sequence.abandoned = True

    def _enqueue(self, prompt: list[int], listener: TokenListener | None = None) -> _Sequence:
        room = self.model.max_tokens - len(prompt)
        sequence = _Sequence(
            prompt, min(self.max_new_tokens, room), concurrent.futures.Future(), listener
        )
        if self._closed:
            sequence.future.set_exception(GenerationError("the generator is closed"))
        elif room < 1:
            sequence.future.set_exception(
                GenerationError(
                    f"prompt of {len(prompt)} tokens leaves no room in the model's "
                    f"window of {self.model.max_tokens}"
                )
            )
        else:
            self._incoming.put(sequence)
            self._wake()
        return sequence

    def _wake(self) -> None:
        """Schedule a turn on the compute thread unless one is scheduled already."""
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        compute.submit(self._turn)

    def _turn(self) -> None:
        """One turn, on the compute thread: the next chunk of a waiting prompt, then one
        decode step of the active rows. The next turn is queued behind whatever other
        model work was submitted meanwhile (a question's embedding runs between steps)."""
        active = self._active
        try:
            if self._filling is None:
                self._admit(active)
            if self._filling is not None:
                self._prefill(active, self._filling)
            if active:
                self._step(active)
        except Exception as exc:  # the model failed: fail everything in flight
            log.exception("decode step failed with %d active sequences", len(active))
            error = exc if isinstance(exc, GenerationError) else GenerationError(str(exc))
            for sequence in [*active, *([self._filling] if self._filling else [])]:
                if not sequence.future.done():
                    sequence.future.set_exception(error)
            active.clear()
            self._filling = None
        with self._lock:
            busy = bool(active) or self._filling is not None or not self._incoming.empty()
            self._scheduled = busy
        if busy:
            compute.submit(self._turn)

    def _admit(self, active: list[_Sequence]) -> None:
        """Take the next waiting prompt to prefill if a row is free."""
        while len(active) < self.model.slots:
            try:
                sequence = self._incoming.get_nowait()
            except queue.Empty:
                return
            if sequence.future.set_running_or_notify_cancel():
                self._filling = sequence
                return
            # else the caller gave up before it started: take the next one

    def _prefill(self, active: list[_Sequence], sequence: _Sequence) -> None:
        """The next chunk of the waiting prompt (all of it when nothing else runs); a
        complete prompt joins the active rows with its first token."""
        if sequence.abandoned:
            self._filling = None
            sequence.future.set_result([])
            return
        chunk = self.prefill_chunk if active else len(sequence.prompt)
        started = time.perf_counter()
        try:
            done, first = self.model.prefill_chunk(
                len(active), sequence.prompt, sequence.prefilled, chunk
            )
        except Exception as exc:
            log.exception("prefill of a %d-token prompt failed", len(sequence.prompt))
            self._filling = None
            sequence.future.set_exception(GenerationError(f"prefill failed: {exc}"))
            return
        finally:
            self.stats.prefill_seconds += time.perf_counter() - started
        sequence.prefilled = done
        if first is None:
            return
        self.stats.prompt_tokens += len(sequence.prompt)
        self._filling = None
        active.append(sequence)
        self._extend(active, len(active) - 1, first)

    def _step(self, active: list[_Sequence]) -> None:
        started = time.perf_counter()
        last = [sequence.generated[-1] for sequence in active]
        if self.no_repeat_ngram:
            n = self.no_repeat_ngram
            tokens = self.model.decode(last, [repeating_tokens(s.generated, n) for s in active])
        else:
            tokens = self.model.decode(last)
        seconds = time.perf_counter() - started
        self.stats.add_step(len(active), seconds)
        BATCH_SIZE.observe(len(active))
        STEP_SECONDS.observe(seconds)
        # Backwards, so retiring a row (which moves the last row into it) skips nothing.
        for row in range(len(active) - 1, -1, -1):
            self._extend(active, row, tokens[row])

    def _extend(self, active: list[_Sequence], row: int, token: int) -> None:
        """Append `token` to row `row`'s answer, retiring the row when it is finished."""
        sequence = active[row]
        stopped = token in self.stop_ids
        if not stopped:
            sequence.generated.append(token)
            if sequence.listener is not None:
                sequence.listener(token)
        if stopped or len(sequence.generated) >= sequence.limit or sequence.abandoned:
            if not sequence.future.done():
                sequence.future.set_result(sequence.generated)
            last = len(active) - 1
            if row != last:
                self.model.move(last, row)
                active[row] = active[last]
            active.pop()
            # A prompt half-way in sits right after the active rows: keep it there.
            if self._filling is not None and self._filling.prefilled:
                self.model.move(last + 1, last)

    def close(self) -> None:
        """Take no more prompts; the ones already submitted are still answered.

        A model swap closes the old generator while answers are still being written on
        it: they complete on the old weights instead of failing.
        """
        self._closed = True
