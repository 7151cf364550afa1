"""Every running process serves the same FAQ index.

`/deskmate faq reload` is answered by one process. It saves the new index and publishes
its content hash as `{prefix}faq:version`; every process's `FaqWatcher` polls that key
and, when it names an index other than the one it serves, loads the saved index from its
data directory (processes sharing a disk) or else re-imports the files the index was built
from (replicas with the same files mounted), and swaps it into its retriever. An index it
cannot find is logged and retried after a minute, while the old one keeps serving. Only
versions published while a process runs count: one started later serves what it was
configured with (DESKMATE_FAQ or the saved index).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bots.indexing import import_faq
from brain.keys import RedisKeys
from brain.polling import Poller
from retrieval.faq import FaqFormatError
from retrieval.index import FaqIndex, IndexLoadError
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)

RETRY_MISSING_SECONDS = 60.0
INDEX_WORK_SECONDS = 300.0  # longest wait for loading or rebuilding an index in a thread

T = TypeVar("T")


async def index_work(work: Callable[[], T], timeout: float = INDEX_WORK_SECONDS) -> T:
    """Run blocking index work (load, embed, save) in a thread, waiting at most `timeout`
    seconds: a reload that cannot finish must not stall the caller forever."""
    return await asyncio.wait_for(asyncio.to_thread(work), timeout)


async def publish(redis: aioredis.Redis, prefix: str, index: FaqIndex) -> None:
    """Tell every process which index to serve (its content hash)."""
    await redis.set(RedisKeys(prefix).faq_version, index.content_hash)


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


class FaqWatcher:
    """Follows `{prefix}faq:version` and swaps the retriever's index when it changes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        retriever: Retriever,
        index_dir: Path,
        interval: float = 5.0,
    ) -> None:
        self.redis = redis
        self.key = RedisKeys(prefix).faq_version
        self.retriever = retriever
        self.index_dir = index_dir
        self.changed = asyncio.Event()  # set after each swap (tests, health)
        self._missing: tuple[str, float] = ("", 0.0)  # a version not found, retry time
        self._seen = ""  # the published version last acted on
        self._poller = Poller(self.check, interval, "faq-watcher")

    async def _published(self) -> str | None:
        try:
            return _text(await self.redis.get(self.key))
        except (RedisError, OSError) as exc:
            log.warning("cannot read the published FAQ version: %s", exc)
            return None

    async def check(self) -> bool:
        """Serve a newly published index if it is not the one served; True if swapped."""
        wanted = await self._published()
        if not wanted or wanted == self._seen:
            return False
        if wanted == self.retriever.index.content_hash:
            self._seen = wanted
            return False
        missing, retry_at = self._missing
        if wanted == missing and time.monotonic() < retry_at:
            return False
        try:
            index = await index_work(lambda: self._find(wanted))
        except TimeoutError:
            log.warning("finding FAQ index %s took over %.0f s", wanted[:12], INDEX_WORK_SECONDS)
            index = None
        if index is None:
            log.warning(
                "FAQ index %s was published but is neither in %s nor rebuilt from %s; "
                "still serving %s (retrying in %.0f s)",
                wanted[:12],
                self.index_dir,
                ", ".join(self.retriever.index.sources) or "any files",
                self.retriever.index.content_hash[:12],
                RETRY_MISSING_SECONDS,
            )
            self._missing = (wanted, time.monotonic() + RETRY_MISSING_SECONDS)
            return False
        self.retriever.index = index
        self._seen = wanted
        log.warning("now serving FAQ index %s (%d entries)", wanted[:12], len(index))
        self.changed.set()
        return True

    def _find(self, wanted: str) -> FaqIndex | None:
        """The index with content hash `wanted`: saved in the data directory, or rebuilt
        from the served index's source files."""
        with contextlib.suppress(IndexLoadError):
            saved = FaqIndex.load(self.index_dir)
            if saved.content_hash == wanted:
                return saved
        files = [Path(source) for source in self.retriever.index.sources]
        if not files:
            return None
        try:
            rebuilt, _ = import_faq(
                self.index_dir, files, self.retriever.embedder, show_progress=False
            )
        except (FaqFormatError, OSError) as exc:
            log.warning("cannot rebuild the FAQ index from %s: %s", files, exc)
            return None
        return rebuilt if rebuilt.content_hash == wanted else None

    async def __aenter__(self) -> Self:
        self._seen = await self._published() or ""  # what was published before we started
        self._poller.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._poller.stop()
