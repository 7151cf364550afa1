"""Partial answers: the customer sees an answer's first words while the model writes it.

Best effort beside the durable flow, which it never holds up. Workers and adapters may
live in different processes, so partial text travels through Redis:

1. The brain worker passes `PartialWriter.callback(inbound)` to the brain; each call
   writes the answer's text so far to `partial:{channel}:{conv}:{message}` and adds a
   notification (no text) to the capped `partials` stream.
2. Every process with adapters runs a `PartialShower`: it reads the notifications, and the
   first process to begin showing a reply owns it (the hash's `owner`). Showing is one
   platform call at a time per reply (`busy` while in flight), the first one at once,
   then at most every `interval` seconds (Telegram allows about one edit a second per
   chat); a 429 skips showing for as long as it asks, never waiting in line.
3. The sender, before delivering the reply, calls `finish_partial`: it marks the reply
   `final` (no showing call starts after that), waits for a call in flight (at most
   `BUSY_LIMIT_SECONDS`) and learns which platform message shows the partial text, so the
   final reply replaces it (Telegram: edits that message; Slack: the placeholder it
   updated is the one the reply replaces anyway).

What the customer may see besides the final reply, in the rare cases: partial text that
stops growing (the showing process died; the final reply still replaces it), or a partial
message left above the final one (the hash expired before the reply was delivered, an
hour later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from brain.answering.backends import PartialCallback
from brain.channel import Adapter, DeliveryError, RetryAfter
from brain.keys import PARTIAL_TTL_SECONDS, PARTIALS_MAXLEN, RedisKeys
from brain.types import Inbound, Reply

log = logging.getLogger(__name__)

SHOW_INTERVAL_SECONDS = 1.0  # between two showing calls of one reply (Telegram: ~1 edit/s)
CALL_TIMEOUT_SECONDS = 3.0  # a showing call that takes longer is given up
BUSY_LIMIT_SECONDS = CALL_TIMEOUT_SECONDS + 1.0  # the sender waits no longer for one
IDLE_SECONDS = 10.0  # a reply with no new text this long is no longer watched


@runtime_checkable
class ShowsPartials(Protocol):
    """An adapter that can show an answer while it is written. `show_partial` shows
    `text` in place of what `shown` (the platform id it returned before, or None) shows,
    and returns the id of the message showing it now (None: nothing to show it in)."""

    async def show_partial(
        self, conversation_id: str, text: str, shown: str | None
    ) -> str | None: ...


@runtime_checkable
class ReplacesPartials(Protocol):
    """An adapter whose final reply replaces the message showing the partial text
    (`shown`) instead of being sent as a new one; it sends anew if that message is gone."""

    async def send_over(self, conversation_id: str, reply: Reply, shown: str) -> str | None: ...


class PartialWriter:
    """The worker side: `callback(inbound)` writes that message's answer so far."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys

    def callback(self, inbound: Inbound) -> PartialCallback:
        key = self.keys.partial(inbound.channel, inbound.conversation_id, inbound.message_id)
        note = {
            "channel": inbound.channel,
            "conversation": inbound.conversation_id,
            "message": inbound.message_id,
        }

        async def write(text: str) -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, "text", text)
                pipe.expire(key, PARTIAL_TTL_SECONDS)
                pipe.xadd(self.keys.partials, note, maxlen=PARTIALS_MAXLEN, approximate=True)  # type: ignore[arg-type]
                await pipe.execute()

        return write


# KEYS: the partial hash. ARGV: this process, now, TTL. Before each showing call:
# {'go', text, shown} (and `busy` set), or {'stop'} when the reply is final, shown by
# another process, or gone.
BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'stop'} end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return {'stop'} end
if redis.call('HEXISTS', KEYS[1], 'final') == 1 then return {'stop'} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'busy', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {'go', redis.call('HGET', KEYS[1], 'text') or '', redis.call('HGET', KEYS[1], 'shown') or ''}
"""

# KEYS: the partial hash. ARGV: TTL. The sender, before delivering the final reply:
# {busy, shown} after marking it final; {} when no partial answer was written for it.
FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HSET', KEYS[1], 'final', '1')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {redis.call('HGET', KEYS[1], 'busy') or '', redis.call('HGET', KEYS[1], 'shown') or ''}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def finish_partial(
    redis: aioredis.Redis, keys: RedisKeys, channel: str, conversation_id: str, message_id: str
) -> str | None:
    """Mark the reply to `message_id` final and return the platform id of the message
    showing its partial text (None: none shown). Waits out a showing call in flight, so
    none lands after the final reply."""
    key = keys.partial(channel, conversation_id, message_id)
    deadline = time.monotonic() + BUSY_LIMIT_SECONDS
    while True:
        state = await redis.eval(FINISH, 1, key, PARTIAL_TTL_SECONDS)  # type: ignore[misc]
        if not state:
            return None
        busy, shown = (_text(value) for value in state)
        stale = bool(busy) and time.time() - float(busy) > BUSY_LIMIT_SECONDS
        if not busy or stale or time.monotonic() >= deadline:
            return shown or None
        await asyncio.sleep(0.05)


@dataclass
class _Showing:
    """One reply this process is showing."""

    new_text: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class PartialShower:
    """Shows partial answers through this process's adapters that can (`ShowsPartials`)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        adapters: Mapping[str, Adapter],
        name: str,
        *,
        interval: float = SHOW_INTERVAL_SECONDS,
        block_seconds: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.adapters = {
            channel: adapter
            for channel, adapter in adapters.items()
            if isinstance(adapter, ShowsPartials)
        }
        self.name = name
        self.interval = interval
        self.block_seconds = block_seconds
        self.shown_calls = 0  # platform calls made (tests, bench)
        self._showing: dict[tuple[str, str, str], _Showing] = {}
        self._paused_until: dict[tuple[str, str], float] = {}  # per conversation, after a 429

    async def run(self, stop: asyncio.Event) -> None:
        """Read notifications until `stop` is set; showing tasks end with it."""
        if not self.adapters:
            return
        last = "$"
        try:
            while not stop.is_set():
                try:
                    read: Any = await self.redis.xread(
                        {self.keys.partials: last}, count=100, block=int(self.block_seconds * 1000)
                    )
                except (RedisError, OSError) as exc:
                    log.debug("partial answers not read: %s", exc)
                    await asyncio.sleep(self.block_seconds)
                    continue
                for _stream, entries in read or []:
                    for entry_id, fields in entries:
                        last = _text(entry_id)
                        self._notified({_text(k): _text(v) for k, v in fields.items()})
        finally:
            tasks = [s.task for s in self._showing.values() if s.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _notified(self, fields: dict[str, str]) -> None:
        channel = fields.get("channel", "")
        if channel not in self.adapters:
            return
        reply = (channel, fields.get("conversation", ""), fields.get("message", ""))
        showing = self._showing.get(reply)
        if showing is None:
            showing = self._showing[reply] = _Showing()
            showing.task = asyncio.create_task(self._show(reply, showing))
        showing.new_text.set()

    async def _show(self, reply: tuple[str, str, str], showing: _Showing) -> None:
        channel, conversation_id, _message = reply
        adapter = self.adapters[channel]
        assert isinstance(adapter, ShowsPartials)
        key = self.keys.partial(*reply)
        shown_text = ""
        try:
            while True:
                try:
                    await asyncio.wait_for(showing.new_text.wait(), IDLE_SECONDS)
                except TimeoutError:
                    return
                paused = self._paused_until.get((channel, conversation_id), 0.0)
                await asyncio.sleep(max(0.0, paused - time.monotonic()))
                showing.new_text.clear()
                begun = await self.redis.eval(  # type: ignore[misc]
                    BEGIN, 1, key, self.name, repr(time.time()), PARTIAL_TTL_SECONDS
                )
                if _text(begun[0]) != "go":
                    return
                text, shown = _text(begun[1]), _text(begun[2]) or None
                new_id = shown
                try:
                    if text and text != shown_text:
                        self.shown_calls += 1
                        new_id = await asyncio.wait_for(
                            adapter.show_partial(conversation_id, text, shown),
                            CALL_TIMEOUT_SECONDS,
                        )
                        shown_text = text
                except RetryAfter as exc:
                    self._paused_until[(channel, conversation_id)] = time.monotonic() + exc.seconds
                    showing.new_text.set()  # the text is still to show, after the pause
                except (DeliveryError, TimeoutError) as exc:
                    log.info("conversation %s: partial answer not shown: %s", conversation_id, exc)
                finally:
                    async with self.redis.pipeline(transaction=True) as pipe:
                        if new_id:
                            pipe.hset(key, "shown", new_id)
                            pipe.expire(key, PARTIAL_TTL_SECONDS)
                        pipe.hdel(key, "busy")
                        await pipe.execute()
                await asyncio.sleep(self.interval)
        except (RedisError, OSError) as exc:
            log.debug("conversation %s: partial answer not shown: %s", conversation_id, exc)
        except Exception:
            log.exception("conversation %s: showing a partial answer failed", conversation_id)
        finally:
            with contextlib.suppress(KeyError):
                if self._showing[reply] is showing:
                    del self._showing[reply]
