"""The generator interface behind generative answers, and dynamic batching.

A `Generator` turns a batch of chat prompts into texts: `hf` runs a transformers model
in-process, `openai` calls an OpenAI-compatible server. `DynamicBatcher` merges the
requests of concurrent conversations into one batched call: the first request opens a
short gather window, everything that arrives within it (up to a maximum batch size)
runs together in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from prometheus_client import Histogram

from brain.prompt import Messages

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "deskmate_generation_batch_size",
    "Prompts served by one batched generate call",
    buckets=(1, 2, 4, 8, 16, 32, 64),
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

    `run_batch` is called in one dedicated worker thread, one batch at a time (a model
    is not safe to call concurrently, and one big batch beats two small ones); while a
    batch runs, new requests queue up for the next.
    """

    def __init__(self, run_batch: Callable[[list[P]], list[str]], options: BatchingOptions) -> None:
        self._run_batch = run_batch
        self.options = options
        self._queue: asyncio.Queue[_Request[P]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deskmate-generate")
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
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Request[P]]) -> None:
        started = time.perf_counter()
        try:
            texts = await loop.run_in_executor(
                self._executor, self._run_batch, [request.prompt for request in batch]
            )
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
        """Stop the gather loop and the worker thread (the running batch finishes)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)
