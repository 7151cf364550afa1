"""A stream consumer that finishes every entry once, one conversation at a time, in order.

Brain workers (inbox -> outbox) and senders (outbox -> platform) are both this loop:

1. Take an entry with `XREADGROUP` (own pending entries first after a failure; entries
   idle for `reclaim_idle` seconds in any consumer's pending list, e.g. a dead process's,
   with `XAUTOCLAIM`, on start and then periodically).
2. Hold the conversation's lock (renewed while the work runs; it expires if we die).
3. Work off the conversation's list from its head up to and including our entry: an
   earlier entry held by a dead consumer is done first, so order is kept; one held by a
   live consumer (waiting for the lock, or finishing after a Redis outage) is waited for
   as long as its owner is live (`reclaim_idle` since it took it), never given up. An
   entry of a batch that waits so is set aside while the batch's others are done, so
   no consumer sits on entries another one waits for.
4. Finish each entry with the `FINISH` script: acknowledge, delete, pass the result on.

Redis failures back off (exponential, with jitter) and resume; nothing is acknowledged
before its result is written, and work done just before Redis went away is not redone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import LockError, RedisError, ResponseError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_when_event_set,
    wait_exponential_jitter,
)

from brain.flow.stream import FINISH, call_redis
from brain.keys import RedisKeys
from brain.redis_server import RedisUnavailable

log = logging.getLogger(__name__)
R = TypeVar("R")
# What `process` passes on: one record, several (in order), or nothing.
Result = str | tuple[str, ...] | None
Entry = tuple[str, dict[str, str] | None]
# A conversation as the flow orders and locks it: (channel, conversation id).
Conversation = tuple[str, str]
DEPARTED_AFTER_MS = 3600 * 1000
OWNER_POLL_SECONDS = 0.02  # between looks at an earlier entry's live owner


@dataclass(frozen=True, slots=True)
class Holding:
    """The entry `process` is working on and the conversation lock held for it."""

    entry_id: str
    conversation: Conversation
    lock: Any


class LockLost(Exception):
    """Raised by `process` when the conversation lock turned out to be another's (this
    process was paused past `lock_timeout`): nothing more may be done for the entry
    until the lock is taken again and the entry is found still unfinished."""


class Postpone(Exception):
    """Raised by `process` to leave an entry pending for a later attempt (after
    `reclaim_idle`), e.g. a platform that stayed unreachable through all retries."""


def _records(result: Result) -> list[str]:
    """FINISH's record arguments: '' for nothing to pass on."""
    if isinstance(result, tuple):
        return [record for record in result if record] or [""]
    return [result or ""]


def _name(conversation: Conversation) -> str:
    """A conversation as logs name it: `telegram:42`."""
    return ":".join(conversation)


def _id_key(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


class OrderedConsumer(ABC, Generic[R]):
    """Consumes `stream` in consumer group `group` as `consumer`; see the module doc.

    One read waits up to `block_seconds` for a new entry, so `run` notices `stop` within
    about that long when idle."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        *,
        stream: str,
        group: str,
        consumer: str,
        next_stream: str | None = None,
        lock_timeout: float = 10.0,
        reclaim_idle: float = 60.0,
        block_seconds: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.next_stream = next_stream
        self.lock_timeout = lock_timeout
        self.reclaim_idle = reclaim_idle
        self.block_ms = int(block_seconds * 1000)
        self.finished = 0
        self._finish = redis.register_script(FINISH)
        self._own_pending_first = True
        self._next_reclaim = 0.0
        self._group_ready = False
        # Results whose finish failed (Redis went away): finished without redoing the
        # work when the entry comes back to us, so a platform is not sent a reply twice.
        self._processed: dict[str, Result] = {}
        self.holding: Holding | None = None  # what `process` works on, while it does

    @abstractmethod
    def decode(self, data: str) -> R:
        """The record stored in an entry's `data` field."""

    @abstractmethod
    def conversation_of(self, record: R) -> Conversation:
        """The conversation a record belongs to (what orders and locks it)."""

    @abstractmethod
    async def process(self, record: R) -> Result:
        """Do the work; return the record (or records, in order) to add to `next_stream`,
        or None for nothing."""

    def finish_keys(self, entry_id: str) -> list[str]:
        """Keys of the entry's own bookkeeping that finishing it deletes (at most one)."""
        return []

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; Redis outages are waited out, not fatal."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RedisUnavailable),
            wait=wait_exponential_jitter(initial=0.05, max=2.0),
            stop=stop_when_event_set(stop),  # type: ignore[arg-type]  # any is_set() works
            before_sleep=self._log_outage,
            reraise=True,
        )
        renewing = asyncio.create_task(self._keep_locks(stop))
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except RedisUnavailable:
                    try:
                        await retrying(self.step)  # backs off until a step succeeds
                    except RedisUnavailable:
                        if not stop.is_set():
                            raise
        finally:
            renewing.cancel()

    def _log_outage(self, state: RetryCallState) -> None:
        if state.outcome is None:
            return
        level = logging.WARNING if state.attempt_number in (1, 10) else logging.DEBUG
        log.log(level, "%s: %s; retrying", self.consumer, state.outcome.exception())

    async def step(self) -> int:
        """Take and finish at most one batch of entries; the number taken."""
        try:
            entries = await self._take()
            await self._handle_batch(entries)
            return len(entries)
        except RedisUnavailable:
            self._own_pending_first = True
            # Redis may have come back empty (a failover, a flushed cache): the group is
            # gone and every read answers NOGROUP until it is created again.
            self._group_ready = False
            raise

    async def _take(self) -> list[Entry]:
        await self._ensure_group()
        loop = asyncio.get_running_loop()
        if self._own_pending_first:
            entries = await self._read("0", count=10)
            if not entries:
                self._own_pending_first = False
            return entries
        if loop.time() >= self._next_reclaim:
            self._next_reclaim = loop.time() + max(self.reclaim_idle / 2, 0.2)
            return await self._reclaim()
        return await self._read(">", count=1, block=self.block_ms)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # Id 0: entries queued before any consumer existed are consumed too.
            await call_redis(
                "creating a consumer group",
                self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True),
            )
        except RedisUnavailable as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ResponseError) and "BUSYGROUP" in str(cause)):
                raise
        self._group_ready = True

    async def _read(self, start: str, count: int, block: int | None = None) -> list[Entry]:
        response: Any = await call_redis(
            f"reading {self.stream}",
            self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=count, block=block
            ),
        )
        if not response:
            return []
        return list(response[0][1])

    async def _reclaim(self) -> list[Entry]:
        """Entries idle in any consumer's pending list (a dead one's) become ours."""
        response: Any = await call_redis(
            f"reclaiming entries of {self.stream}",
            self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=int(self.reclaim_idle * 1000),
                start_id="0-0",
                count=50,
            ),
        )
        entries: list[Entry] = list(response[1]) if response else []
        await self._forget_departed_consumers()
        if entries:
            log.warning(
                "%s: reclaimed %d entries of %s left pending by a stopped consumer",
                self.consumer,
                len(entries),
                self.stream,
            )
        return entries

    async def _forget_departed_consumers(self) -> None:
        """Drop consumers of stopped processes (nothing pending, silent for an hour), so
        the group does not grow with every restart."""
        consumers: Any = await call_redis(
            "listing consumers", self.redis.xinfo_consumers(self.stream, self.group)
        )
        for consumer in consumers:
            if consumer["pending"] == 0 and consumer["idle"] > DEPARTED_AFTER_MS:
                await call_redis(
                    "removing a consumer",
                    self.redis.xgroup_delconsumer(self.stream, self.group, consumer["name"]),
                )

    async def _handle_batch(self, entries: list[Entry]) -> None:
        """Finish a batch (a reclaim, our own pending entries), in order, but never sit on
        entries not started yet while one waits for an earlier entry's live owner: that
        one is set aside and tried again after the others. Otherwise two consumers can
        each wait on an entry the other holds further down its batch, until
        `reclaim_idle` makes the other look dead."""
        waiting = list(entries)
        while waiting:
            waiting = [entry for entry in waiting if not await self._attempt(*entry)]
            if waiting:
                await asyncio.sleep(OWNER_POLL_SECONDS)

    async def _handle(self, entry_id: str, fields: dict[str, str] | None) -> None:
        """Finish one entry (waiting as long as an earlier entry's owner is live)."""
        await self._handle_batch([(entry_id, fields)])

    async def _attempt(self, entry_id: str, fields: dict[str, str] | None) -> bool:
        """One try at an entry: False when an earlier entry's live owner must finish
        first (it is waited for until it is no longer live, `reclaim_idle` after it took
        the entry, then its entry is done here; giving up instead would leave ours for
        the reclaim, a minute later); True when done with it for now."""
        data = fields.get("data") if fields else None
        if data is None:  # deleted meanwhile, or not ours: nothing to do but forget it
            await call_redis("acknowledging", self.redis.xack(self.stream, self.group, entry_id))
            return True
        record = self.decode(data)
        conversation = self.conversation_of(record)
        lock = self.redis.lock(
            self.keys.lock(self.stream, *conversation),
            timeout=self.lock_timeout,
            sleep=0.005,
            blocking_timeout=self.lock_timeout * 3,
            thread_local=False,
        )
        if not await call_redis("taking a conversation lock", lock.acquire()):
            log.warning("%s: conversation %s stayed locked", self.consumer, _name(conversation))
            return True  # still pending with us: reclaimed after reclaim_idle
        try:
            return await self._work_off(conversation, entry_id, record, lock)
        except Postpone as exc:
            log.warning(
                "%s: conversation %s postponed: %s", self.consumer, _name(conversation), exc
            )
            return True
        except LockLost:
            log.warning(
                "%s: lost the lock of conversation %s while working; taking it again",
                self.consumer,
                _name(conversation),
            )
            return False
        finally:
            with contextlib.suppress(LockError, RedisError, OSError):
                await lock.release()  # expired or Redis gone: it times out by itself

    async def _work_off(
        self, conversation: Conversation, entry_id: str, record: R, lock: Any
    ) -> bool:
        """Finish the conversation's entries up to ours; False: wait for an earlier one's
        live owner (it may have done the work already and only lost Redis for a while)."""
        queue = self.keys.queue(self.stream, *conversation)
        while True:
            head: Any = await call_redis("reading a queue", self.redis.lindex(queue, 0))
            if head is None or _id_key(head) > _id_key(entry_id):
                self._processed.pop(entry_id, None)
                return True  # ours is finished (by us, or by whoever held the lock before)
            if head == entry_id:
                current = record
            else:
                if await self._owned_by_another_live_consumer(head):
                    return False
                found: Any = await call_redis(
                    f"reading {self.stream}", self.redis.xrange(self.stream, head, head)
                )
                if not found:  # cannot happen with FINISH; never let it block the queue
                    await call_redis("repairing a queue", self.redis.lrem(queue, 1, head))
                    continue
                current = self.decode(found[0][1]["data"])
            if head in self._processed:  # done before Redis failed to take the result
                result = self._processed[head]
            else:
                result = await self._process_holding(Holding(head, conversation, lock), current)
                self._processed[head] = result
                while len(self._processed) > 1000:  # entries another consumer finished
                    del self._processed[next(iter(self._processed))]
            await self._finish_entry(head, conversation, result)
            del self._processed[head]
            if head == entry_id:
                return True

    async def _owned_by_another_live_consumer(self, entry_id: str) -> bool:
        pending: Any = await call_redis(
            "reading pending entries",
            self.redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1),
        )
        if not pending:
            return False
        owner = pending[0]
        return bool(
            owner["consumer"] != self.consumer
            and owner["time_since_delivered"] < self.reclaim_idle * 1000
        )

    async def _process_holding(self, holding: Holding, record: R) -> Result:
        """Run `process` while `_keep_locks` renews the lock (a long generation keeps
        the conversation; a dead process's lock expires after `lock_timeout`)."""
        self.holding = holding
        try:
            return await self.process(record)
        finally:
            self.holding = None

    async def _keep_locks(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lock_timeout / 3)
            holding = self.holding
            if holding is None:
                continue
            try:
                await holding.lock.reacquire()
            except (LockError, RedisError, OSError) as exc:
                if self.holding is holding:
                    log.warning("%s: could not renew a lock (%s)", self.consumer, exc)

    async def _finish_entry(
        self, entry_id: str, conversation: Conversation, result: Result
    ) -> None:
        queue = self.keys.queue(self.stream, *conversation)
        next_stream = self.next_stream or self.stream
        next_queue = self.keys.queue(next_stream, *conversation)
        outcome = await call_redis(
            "finishing an entry",
            self._finish(
                keys=[self.stream, queue, next_stream, next_queue, *self.finish_keys(entry_id)],
                args=[self.group, entry_id, *_records(result)],
            ),
        )
        if outcome is None:
            log.info("%s: %s was finished by another consumer", self.consumer, entry_id)
        else:
            self.finished += 1
