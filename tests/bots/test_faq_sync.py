"""A `faq reload` answered by one process reaches every process (real Redis, real index)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bots.faq_sync import FaqWatcher
from bots.indexing import import_faq
from bots.staff import StaffCommands
from brain.keys import RedisKeys
from retrieval.embedder import Embedder
from retrieval.index import FaqIndex, IndexLoadError
from retrieval.retriever import Retriever

ENTRIES = [
    {"id": "returns", "question": "How do I return an item?", "answer": "Use the portal."},
    {"id": "shipping", "question": "How long does delivery take?", "answer": "2-4 days."},
]
NEW = {"id": "gift-wrap", "question": "Do you offer gift wrapping?", "answer": "Yes, for 3 EUR."}


def write_faq(path: Path, entries: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def process(directory: Path, faq: Path, embedder: Embedder) -> Retriever:
    """A serving process's retriever over its own data directory."""
    index, _ = import_faq(directory, [faq], embedder, show_progress=False)
    return Retriever(embedder, index)


def staff_of(retriever: Retriever, redis: aioredis.Redis, directory: Path) -> StaffCommands:
    return StaffCommands(
        retriever, redis, prefix="dm:", index_dir=directory, backend_version="quote"
    )


async def test_a_reload_in_one_process_is_served_by_the_others(
    tmp_path: Path, embedder: Embedder, redis: aioredis.Redis
) -> None:
    faq = tmp_path / "faq.jsonl"
    write_faq(faq, ENTRIES)
    shared = tmp_path / "shared-index"
    first = process(shared, faq, embedder)
    second = process(shared, faq, embedder)  # same disk
    replica = process(tmp_path / "replica-index", faq, embedder)  # own disk, same files
    # The shared-disk process follows on its own poll; the replica is checked by hand.
    polling = FaqWatcher(redis, "dm:", second, shared, interval=0.05)
    by_hand = FaqWatcher(redis, "dm:", replica, tmp_path / "replica-index", interval=3600)
    async with polling, by_hand:
        write_faq(faq, [*ENTRIES, NEW])
        reply = await asyncio.wait_for(staff_of(first, redis, shared).run("faq reload"), 60)
        assert reply.startswith("Reloaded 3 FAQ entries")
        assert await redis.get(RedisKeys("dm:").faq_version) == first.index.content_hash
        await asyncio.wait_for(polling.changed.wait(), timeout=10)
        assert await asyncio.wait_for(by_hand.check(), 60)  # rebuilt from its own disk's files
        assert not await asyncio.wait_for(by_hand.check(), 60)  # once
    for retriever in (second, replica):
        assert retriever.index.content_hash == first.index.content_hash
        assert retriever.search("gift wrap my present")[0].entry.id == "gift-wrap"


async def test_a_version_published_before_start_or_not_found_keeps_the_served_index(
    tmp_path: Path, embedder: Embedder, redis: aioredis.Redis
) -> None:
    faq = tmp_path / "faq.jsonl"
    write_faq(faq, ENTRIES)
    retriever = process(tmp_path / "index", faq, embedder)
    served = retriever.index.content_hash
    await redis.set(RedisKeys("dm:").faq_version, "published-last-week")
    watcher = FaqWatcher(redis, "dm:", retriever, tmp_path / "index", interval=60)
    async with watcher:
        assert not await watcher.check()  # older than this process: its own index stands
        await redis.set(RedisKeys("dm:").faq_version, "nowhere-to-be-found")
        assert not await watcher.check()  # neither saved nor rebuilt from the files
        assert retriever.index.content_hash == served
        assert FaqIndex.load(tmp_path / "index").content_hash == served


async def test_a_failing_check_does_not_stop_the_watcher(
    tmp_path: Path, embedder: Embedder, redis: aioredis.Redis
) -> None:
    """A saved index that cannot be read (here: half of two saves) is logged and retried;
    the watcher keeps polling and follows the next good publication."""
    faq = tmp_path / "faq.jsonl"
    write_faq(faq, ENTRIES)
    directory = tmp_path / "index"
    retriever = process(directory, faq, embedder)
    watcher = FaqWatcher(redis, "dm:", retriever, directory, interval=0.05)
    calls = 0
    real_check = watcher.check

    async def flaky_check() -> bool:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("disk hiccup")
        return await real_check()

    watcher._poller.check = flaky_check
    async with watcher:
        write_faq(faq, [*ENTRIES, NEW])
        newer = process(tmp_path / "other", faq, embedder)
        newer.index.save(directory)
        await redis.set(RedisKeys("dm:").faq_version, newer.index.content_hash)
        await asyncio.wait_for(watcher.changed.wait(), timeout=10)
    assert watcher._poller.failures == 2
    assert retriever.index.content_hash == newer.index.content_hash


def test_an_index_read_across_two_saves_is_refused(tmp_path: Path, embedder: Embedder) -> None:
    faq = tmp_path / "faq.jsonl"
    write_faq(faq, ENTRIES)
    old = process(tmp_path / "old", faq, embedder).index
    write_faq(faq, [*ENTRIES, NEW])
    new = process(tmp_path / "new", faq, embedder).index
    mixed = tmp_path / "mixed"
    old.save(mixed)
    (mixed / "vectors.npy").write_bytes((tmp_path / "new" / "vectors.npy").read_bytes())
    assert len(new.vectors) != len(old.vectors)
    with pytest.raises(IndexLoadError, match="changed while it was read"):
        FaqIndex.load(mixed)
