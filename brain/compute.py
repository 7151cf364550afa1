"""Where model math runs in a deskmate process: one thread for serving, fresh ones for
long work.

PyTorch's CPU kernels run on OpenMP (libgomp). Every thread that starts parallel work
gets a team of worker threads of its own, kept for as long as that thread lives. While the
process holds more such threads than CPUs, libgomp stops spinning between parallel regions
and every region pays a sleep and a wake instead. A decode step is hundreds of small
parallel regions: on 2 cores, one step of SmolLM2-135M took 15 ms with one thread doing
model math and 35 ms once a second thread (the one that had loaded the model, or a
worker of asyncio's default executor that had embedded a question) was merely alive.

So the process keeps one thread for model math while serving:

- `run` (async) / `call` (blocking) / `submit` run a function on the compute thread:
  embeddings, searches, classification, generation steps. Jobs run one at a time in the
  order they were submitted, so a question's embedding slots in between two decode steps
  of the conversations being answered.
- `run_apart` runs long work (loading a model, building an index) on a fresh thread that
  ends with it, so serving is slowed only while it runs and answers do not wait for it.

Anything that calls torch (or a library built on it) from another long-lived thread,
the main thread included, brings the slowdown back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREAD_NAME = "deskmate-compute"

_executor: ThreadPoolExecutor | None = None
_thread_id: int | None = None
_lock = threading.Lock()


def _remember_thread() -> None:
    global _thread_id
    _thread_id = threading.get_ident()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=THREAD_NAME, initializer=_remember_thread
            )
        return _executor


def on_compute_thread() -> bool:
    """Whether the caller is the compute thread."""
    return _thread_id is not None and threading.get_ident() == _thread_id


def submit(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """Queue `fn(*args, **kwargs)` on the compute thread."""
    return _pool().submit(fn, *args, **kwargs)


def call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on the compute thread, waiting for it (directly when the
    caller is the compute thread). For synchronous code: commands, benchmarks."""
    if on_compute_thread():
        return fn(*args, **kwargs)
    return submit(fn, *args, **kwargs).result()


async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on the compute thread, awaited from an event loop."""
    return await asyncio.wrap_future(submit(fn, *args, **kwargs))


async def run_apart(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on a fresh thread that ends when it returns (its OpenMP
    team goes with it): for long work that must not hold up the compute thread."""
    apart = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{THREAD_NAME}-apart")
    try:
        return await asyncio.wrap_future(apart.submit(fn, *args, **kwargs))
    finally:
        apart.shutdown(wait=False)  # the thread ends once `fn` returns
