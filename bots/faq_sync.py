"""Every running process serves the same FAQ index.

`/deskmate faq reload` is answered by one process. It saves the new index and publishes
its content hash as `{prefix}faq:version`; every process's `FaqWatcher` polls that key
and, when it names an index other than the one it serves, loads the saved index from its
data directory (processes sharing a disk) or else re-imports the files the index was built
from (replicas with the same files mounted), and swaps it into its retriever. An index it
cannot find is logged and retried after a minute, while the old one keeps serving. Only
versions published while a process runs count: one started later serves what it was
configured with (DESKMATE_FAQ or the saved index).

`SourceSync` re-reads the index's sources (folders, documents, web pages) every
DESKMATE_SYNC_SECONDS in one of the running processes (a Redis lock picks it), and
publishes the result like a reload; `deskmate faq sync` and `/deskmate faq sync` do the
same on demand. Unchanged passages keep their vectors, so only edited documents are
embedded again; a sync that fails keeps the index being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bots.indexing import import_faq, import_knowledge
from brain import compute
from brain.keys import RedisKeys
from brain.polling import Poller
from retrieval.faq import FaqFormatError
from retrieval.index import FaqIndex, IndexLoadError
from retrieval.knowledge.sources import ImportReport, IngestOptions, Source, as_source
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)

RETRY_MISSING_SECONDS = 60.0
INDEX_WORK_SECONDS = 300.0  # longest wait for loading or rebuilding an index in a thread
SYNC_WORK_SECONDS = 3600.0  # a sync fetches pages politely: a big site takes a while

T = TypeVar("T")


async def index_work(work: Callable[[], T], timeout: float = INDEX_WORK_SECONDS) -> T:
    """Run blocking index work (load, embed, save) in a thread, waiting at most `timeout`
    seconds: a reload that cannot finish must not stall the caller forever."""
    return await asyncio.wait_for(compute.run_apart(work), timeout)


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
        options: IngestOptions | None = None,
    ) -> None:
        self.redis = redis
        self.key = RedisKeys(prefix).faq_version
        self.options = options
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
        files = [as_source(source) for source in self.retriever.index.sources]
        if not files:
            return None
        try:
            rebuilt, _ = import_faq(
                self.index_dir,
                files,
                self.retriever.embedder,
                show_progress=False,
                options=self.options,
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


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What a sync did: the index now served, whether it changed, what was read."""

    index: FaqIndex
    rebuilt: bool
    report: ImportReport
    published: bool
    sources: tuple[Source, ...]


class SyncError(RuntimeError):
    """A sync could not finish; the index being served stays."""


async def sync_sources(
    retriever: Retriever,
    redis: aioredis.Redis,
    prefix: str,
    index_dir: Path,
    *,
    sources: Sequence[Source] = (),
    options: IngestOptions | None = None,
    timeout: float = INDEX_WORK_SECONDS,
) -> SyncOutcome:
    """Re-read the served index's sources (or `sources`), swap the retriever's index if
    anything changed, and publish it so every process follows."""
    wanted = tuple(as_source(s) for s in retriever.index.sources) or tuple(sources)
    if not wanted:
        raise SyncError("the index was not built from files or URLs, so there is nothing to sync")
    try:
        index, rebuilt, report = await index_work(
            lambda: import_knowledge(
                index_dir, wanted, retriever.embedder, show_progress=False, options=options
            ),
            timeout,
        )
    except TimeoutError as exc:
        raise SyncError(f"did not finish within {timeout:.0f} s") from exc
    except (FaqFormatError, OSError) as exc:
        raise SyncError(str(exc)) from exc
    retriever.index = index
    try:
        await publish(redis, prefix, index)
        published = True
    except (RedisError, OSError) as exc:
        log.warning("faq sync: cannot publish the new index: %s", exc)
        published = False
    return SyncOutcome(index, rebuilt, report, published, wanted)


class SourceSync:
    """Every `interval` seconds, one process (whichever takes the Redis lock) syncs the
    served index's sources and publishes the result; the others follow via FaqWatcher."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        retriever: Retriever,
        index_dir: Path,
        interval: float,
        owner: str,
        options: IngestOptions | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lock = RedisKeys(prefix).faq_sync_lock
        self.retriever = retriever
        self.index_dir = index_dir
        self.interval = interval
        self.owner = owner
        self.options = options
        self.synced = asyncio.Event()  # set after each sync this process ran (tests)
        self._poller = Poller(self.check, interval, "faq-source-sync")

    async def check(self) -> bool:
        """Sync if no other process did this interval; True if this process synced."""
        if not self.retriever.index.sources:
            return False
        # Held a little less than an interval, so the next tick anywhere may take it.
        hold = max(1, int(self.interval * 0.9))
        if not await self.redis.set(self.lock, self.owner, nx=True, ex=hold):
            return False
        try:
            outcome = await sync_sources(
                self.retriever,
                self.redis,
                self.prefix,
                self.index_dir,
                options=self.options,
                timeout=SYNC_WORK_SECONDS,
            )
        except SyncError as exc:
            log.warning("scheduled FAQ sync failed, still serving the previous index: %s", exc)
            return False
        report = outcome.report
        log.warning(
            "scheduled FAQ sync: %s; %d documents, %d passages, %d FAQ entries, %d skipped",
            "index updated" if outcome.rebuilt else "nothing changed",
            report.documents,
            report.passages,
            report.faq_entries,
            len(report.skipped),
        )
        for item in report.skipped:
            log.warning("scheduled FAQ sync skipped %s: %s", item.name, item.reason)
        self.synced.set()
        return True

    async def __aenter__(self) -> Self:
        if self.interval > 0:
            self._poller.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._poller.stop()
