"""Approved FAQ entries: a person approves a draft, it joins the served index everywhere.

Approved entries live in one JSONL file beside the index (`dashboard-faq.jsonl` in the
data directory), which becomes one of the index's sources: approving appends to it,
rebuilds the index (only the new texts are embedded) and publishes it like `faq reload`,
so every process follows. Every approval and undo is recorded in `faq:approvals` (who,
when, which entry, what it said); undo removes the entry and publishes again.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bots.faq_sync import index_work, publish
from bots.indexing import import_knowledge
from brain.keys import RedisKeys
from retrieval.faq import stable_id
from retrieval.knowledge.sources import IngestOptions, as_source
from retrieval.retriever import Retriever

APPROVED_FILE = "dashboard-faq.jsonl"
APPROVALS_KEPT = 10_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class Approvals:
    """Adds and removes staff-approved entries and publishes the index."""

    redis: aioredis.Redis
    prefix: str
    retriever: Retriever
    index_dir: Path
    data_dir: Path
    options: IngestOptions | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    @property
    def path(self) -> Path:
        return self.data_dir / APPROVED_FILE

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _write(self, entries: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)

    def _unique_id(self, question: str, taken: set[str]) -> str:
        base = stable_id(question)
        candidate, n = base, 1
        while candidate in taken or self.retriever.index.entry(candidate) is not None:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    async def approve(
        self, who: str, question: str, alternates: list[str], answer: str
    ) -> dict[str, Any]:
        """Add the entry and publish it; returns the entry as written."""
        question, answer = question.strip(), answer.strip()
        if not question or not answer:
            raise ValueError("an FAQ entry needs a question and an answer")
        async with self._lock:
            entries = self.entries()
            entry_id = self._unique_id(question, {str(e["id"]) for e in entries})
            entry = {
                "id": entry_id,
                "question": question,
                "answer": answer,
                "alternates": [a.strip() for a in alternates if a.strip()],
            }
            self._write([*entries, entry])
            await self._publish()
            await self._record("approve", who, entry)
        return entry

    async def undo(self, who: str, entry_id: str) -> bool:
        """Remove an approved entry and publish; False if it is not there."""
        async with self._lock:
            entries = self.entries()
            kept = [e for e in entries if e["id"] != entry_id]
            if len(kept) == len(entries):
                return False
            self._write(kept)
            await self._publish()
            removed = next(e for e in entries if e["id"] == entry_id)
            await self._record("undo", who, removed)
        return True

    async def history(self, limit: int = 100) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(RedisKeys(self.prefix).faq_approvals, 0, limit - 1)
        return [json.loads(_text(item)) for item in raw or []]

    async def _record(self, action: str, who: str, entry: dict[str, Any]) -> None:
        key = RedisKeys(self.prefix).faq_approvals
        record = {"action": action, "who": who, "when": time.time(), "entry": entry}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, json.dumps(record, ensure_ascii=False))
            pipe.ltrim(key, 0, APPROVALS_KEPT - 1)
            await pipe.execute()

    async def _publish(self) -> None:
        """Rebuild the index from its sources plus the approved file, serve and publish it."""
        sources = [str(s) for s in self.retriever.index.sources]
        if not sources:  # rebuilding from the approved file alone would drop the FAQ
            raise ValueError("the index was not built from files: import the FAQ first")
        if str(self.path) not in sources:
            sources.append(str(self.path))
        wanted = [as_source(s) for s in sources]
        index, _, _ = await index_work(
            lambda: import_knowledge(
                self.index_dir,
                wanted,
                self.retriever.embedder,
                show_progress=False,
                options=self.options,
            )
        )
        self.retriever.index = index.with_thresholds(self.retriever.index.thresholds)
        await publish(self.redis, self.prefix, self.retriever.index)
