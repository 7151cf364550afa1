"""A retrieval model promoted in one place is searched with by every process (real Redis)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import redis.asyncio as aioredis

from bots.indexing import import_faq
from bots.retrieval_models import (
    active_embedder,
    make_active,
    register,
    retriever_registry,
    retriever_watcher,
)
from brain.answering.registry import BASE, rollback
from brain.keys import RedisKeys
from brain.settings import Settings
from retrieval.embedder import Embedder
from retrieval.learning import LearnResult
from retrieval.retriever import Retriever

ENTRIES = [
    {"id": "returns", "question": "How do I return an item?", "answer": "Use the portal."},
    {"id": "shipping", "question": "How long does delivery take?", "answer": "2-4 days."},
]


def kept(model_dir: Path, name: str) -> LearnResult:
    """A learn result that kept `model_dir` (here: the base model's own files)."""
    return LearnResult(model_dir, name, 12, 1.0, 0.5, 0.7, 0.4, 0.6, 3, "learned model kept")


async def test_every_process_follows_the_active_retrieval_model(
    tmp_path: Path, embedder: Embedder, redis: aioredis.Redis
) -> None:
    settings = Settings(data_dir=tmp_path, model_watch_seconds=0.05)
    faq = tmp_path / "faq.jsonl"
    faq.write_text("".join(json.dumps(entry) + "\n" for entry in ENTRIES))
    index, _ = import_faq(settings.index_dir, [faq], embedder, show_progress=False)
    retriever = Retriever(embedder, index)
    result = kept(Path(embedder.location), "all-MiniLM-L6-v2+faq-0123456789ab")

    version = register(settings, result, embedder)
    assert version == "v1"
    assert register(settings, result, embedder) == "v1"  # the same model is not registered twice
    assert retriever_registry(settings).get("v1").metrics["held_out_mrr"] == 0.7

    async with retriever_watcher(settings, redis, retriever, current=BASE) as watcher:
        assert await make_active(settings, redis, "v1")
        assert not await make_active(settings, redis, "v1")  # already served: no change
        assert await redis.get(RedisKeys("dm:").retriever_active) == "v1"
        await asyncio.wait_for(watcher.changed.wait(), timeout=60)
        # The embedder and an index embedded by it were swapped together.
        assert retriever.embedder.name == result.name == retriever.index.model
        assert retriever.search("send it back")[0].id == "returns"
        assert active_embedder(settings, embedder).name == result.name  # the file mirror too

        watcher.changed.clear()
        assert await rollback(redis, "dm:", retriever_registry(settings), watcher.key) == BASE
        await asyncio.wait_for(watcher.changed.wait(), timeout=60)
        assert retriever.embedder.name == embedder.name == retriever.index.model
