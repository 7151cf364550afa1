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
from redis.exceptions import RedisError

from bots.faq_sync import INDEX_WORK_SECONDS, index_work, publish
from bots.indexing import import_faq
from brain.keys import RedisKeys
from retrieval.faq import FaqFormatError
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)
DAY = 24 * 3600
PAGE = 1000

USAGE = """\
Staff commands:
  faq reload   re-import the FAQ files the index was built from; every process serves it
  stats        messages, answers, handoffs and ratings over the last 24 hours
  model        the dialogue model version being served"""


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
    ) -> None:
        self.retriever = retriever
        self.redis = redis
        self.prefix = prefix
        self.index_dir = index_dir
        self.backend_version = backend_version
        self.faq_files = tuple(faq_files)

    async def run(self, text: str) -> str:
        """Run one command line (`faq reload`, `stats`, `model`); anything else: usage."""
        words = text.lower().split()
        if words == ["faq", "reload"]:
            return await self.reload_faq()
        if words == ["stats"]:
            return (await self.stats()).render(DAY // 3600)
        if words == ["model"]:
            return await self.model()
        return USAGE

    async def reload_faq(self) -> str:
        """Re-import the index's FAQ files and swap the retriever's index in place."""
        files = [Path(source) for source in self.retriever.index.sources] or list(self.faq_files)
        if not files:
            return "The index was not built from files, so there is nothing to reload."
        try:
            index, rebuilt = await index_work(
                lambda: import_faq(
                    self.index_dir, files, self.retriever.embedder, show_progress=False
                )
            )
        except TimeoutError:
            log.warning("faq reload took over %.0f s", INDEX_WORK_SECONDS)
            return (
                f"FAQ reload did not finish within {INDEX_WORK_SECONDS:.0f} s; still serving "
                "the previous index. Try again, or check the logs."
            )
        except (FaqFormatError, OSError) as exc:
            log.warning("faq reload failed: %s", exc)
            return f"FAQ reload failed, still serving the previous index: {exc}"
        self.retriever.index = index
        names = ", ".join(path.name for path in files)
        verb = "Reloaded" if rebuilt else "Unchanged, still serving"
        try:
            await publish(self.redis, self.prefix, index)  # the other processes follow
        except (RedisError, OSError) as exc:
            log.warning("faq reload: cannot publish the new index: %s", exc)
            return (
                f"{verb} {len(index)} FAQ entries from {names} in this process only: "
                f"Redis is unreachable, so other processes keep their index ({exc})."
            )
        return f"{verb} {len(index)} FAQ entries from {names}."

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

    async def model(self) -> str:
        """The model version replicas serve: `model:active` in Redis, else the backend's."""
        active_key = RedisKeys(self.prefix).model_active
        active = await self.redis.get(active_key)
        if active:
            return f"Active model: {_text(active)} (set in Redis {active_key})."
        return (
            f"Active model: {self.backend_version} (the configured backend; no version promoted)."
        )


def _text(value: object) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
