"""Staff commands (`faq reload`, `stats`, `model`), whatever channel they are typed in.

The Slack adapter runs them for `/deskmate ...`; who may run them is the channel's call.
They read the transcripts stream and the retriever, so they live beside the composition
root rather than in the brain.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from bots.faq_sync import SyncError, sync_sources
from brain.handoff.machine import Handoffs, State
from brain.keys import RedisKeys
from retrieval.knowledge.sources import IngestOptions
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)
DAY = 24 * 3600
PAGE = 1000

USAGE = """\
Staff commands:
  faq reload   re-read the FAQ files, documents and web pages the index was built from
               (unchanged ones are not embedded again); every process serves the result
  faq sync     the same as faq reload
  stats        messages, answers, handoffs and ratings over the last 24 hours
  model        the dialogue model version being served
  queue        open handoffs, oldest first, with their ages and who has each"""


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts over a time window of the transcripts stream."""

    messages: int = 0
    answers: int = 0
    clarifications: int = 0
    handoffs: int = 0
    ratings: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)

    def render(self, hours: int) -> str:
        up, down = self.ratings["up"], self.ratings["down"]
        channels = ", ".join(f"{name} {count}" for name, count in self.by_channel.most_common())
        lines = [
            f"Last {hours} h:",
            f"  messages        {self.messages}" + (f" ({channels})" if channels else ""),
            f"  answers         {self.answers}",
            f"  clarifications  {self.clarifications}",
            f"  handoffs        {self.handoffs}",
            f"  ratings         👍 {up}  👎 {down}",
        ]
        return "\n".join(lines)


class StaffCommands:
    """Runs staff commands against the live retriever and Redis (a decoding client)."""

    def __init__(
        self,
        retriever: Retriever,
        redis: aioredis.Redis,
        *,
        prefix: str,
        index_dir: Path,
        backend_version: str,
        faq_files: Sequence[Path] = (),
        options: IngestOptions | None = None,
    ) -> None:
        self.retriever = retriever
        self.redis = redis
        self.prefix = prefix
        self.index_dir = index_dir
        self.backend_version = backend_version
        self.faq_files = tuple(faq_files)
        self.options = options

    async def run(self, text: str) -> str:
        """Run one command line (`faq reload`, `stats`, `model`); anything else: usage."""
        words = text.lower().split()
        if words in (["faq", "reload"], ["faq", "sync"]):
            return await self.reload_faq()
        if words == ["stats"]:
            return (await self.stats()).render(DAY // 3600)
        if words == ["model"]:
            return await self.model()
        if words == ["queue"]:
            return await self.queue()
        return USAGE

    async def reload_faq(self) -> str:
        """Re-read the index's sources (FAQ files, folders, documents, web pages) and swap
        the retriever's index in place; every other process follows."""
        try:
            outcome = await sync_sources(
                self.retriever,
                self.redis,
                self.prefix,
                self.index_dir,
                sources=self.faq_files,
                options=self.options,
            )
        except SyncError as exc:
            log.warning("faq reload failed: %s", exc)
            if "nothing to sync" in str(exc):
                return "The index was not built from files, so there is nothing to reload."
            return f"FAQ reload failed, still serving the previous index: {exc}"
        index, report = outcome.index, outcome.report
        names = ", ".join(
            source if isinstance(source, str) else source.name for source in outcome.sources
        )
        verb = "Reloaded" if outcome.rebuilt else "Unchanged, still serving"
        summary = f"\n{report.render()}" if report.documents or report.skipped else ""
        if not outcome.published:
            return (
                f"{verb} {len(index)} FAQ entries from {names} in this process only: "
                f"Redis is unreachable, so other processes keep their index.{summary}"
            )
        return f"{verb} {len(index)} FAQ entries from {names}.{summary}"

    async def stats(self, now: float | None = None, window: int = DAY) -> Stats:
        """Count transcript events since `now - window`, reading the stream by time id."""
        now = time.time() if now is None else now
        start = f"{int((now - window) * 1000)}-0"
        messages = answers = clarifications = handoffs = 0
        ratings: Counter[str] = Counter()
        by_channel: Counter[str] = Counter()
        key = RedisKeys(self.prefix).transcripts
        while True:
            page = await self.redis.xrange(key, min=start, max="+", count=PAGE) or []
            for _, raw in page:
                event = {_text(k): _text(v) for k, v in (raw or {}).items()}
                kind = event.get("type", "")
                data = json.loads(event.get("data") or "{}")
                channel = event.get("channel", "")
                if kind == "turn":
                    turn = data.get("turn", {})
                    if turn.get("role") == "user":
                        messages += 1
                        by_channel[channel] += 1
                    elif turn.get("action") == "answer":
                        answers += 1
                    elif turn.get("action") == "clarify":
                        clarifications += 1
                elif kind == "handoff":
                    handoffs += 1
                elif kind == "feedback" and data.get("rating") in ("up", "down"):
                    ratings[data["rating"]] += 1
            if len(page) < PAGE:
                break
            start = "(" + _text(page[-1][0])
        return Stats(messages, answers, clarifications, handoffs, ratings, by_channel)

    async def queue(self, now: float | None = None) -> str:
        """The open handoffs with their ages: waiting ones by place, claimed ones by agent."""
        entries = await Handoffs(self.redis, self.prefix).open_handoffs(now)
        if not entries:
            return "No open handoffs."
        lines = [f"{len(entries)} open handoff{'s' if len(entries) != 1 else ''}:"]
        place = 0
        for entry in entries:
            record = entry.handoff
            if record.state is State.CLAIMED:
                status = f"claimed by {record.agent}"
            else:
                place += 1
                status = f"#{place} {record.state.value.replace('_', ' ')}"
            lines.append(
                f"  {record.member:<24} {_age(entry.age_seconds):>7}  {status}  ({record.reason})"
            )
        return "\n".join(lines)

    async def model(self) -> str:
        """The model version replicas serve: `model:active` in Redis, else the backend's."""
        active_key = RedisKeys(self.prefix).model_active
        active = await self.redis.get(active_key)
        if active:
            return f"Active model: {_text(active)} (set in Redis {active_key})."
        return (
            f"Active model: {self.backend_version} (the configured backend; no version promoted)."
        )


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d}"


def _text(value: object) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
