"""What broke under outside failures (issue 15), each on a real Redis: a process paused
mid-delivery, Redis restarted empty, a process killed mid-delivery, a slow model behind a
live worker, a burst larger than the connection pool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from bots.http_channel import HttpChannel
from bots.web import make_web_app, serve_web
from brain.channel import NetworkError
from brain.conversations import ConversationStore
from brain.flow import consumer as consumer_module
from brain.flow.sender import Sender
from brain.flow.stream import Intake, Outgoing
from brain.flow.wiring import Flow
from brain.flow.worker import BrainWorker
from brain.keys import RedisKeys
from brain.redis_server import EmbeddedRedis, RedisUnavailable, client
from brain.types import Inbound, Reply, Turn
from tests.fakes.callback_server import CallbackServer

KEYS = RedisKeys("dm:")
REDELIVERIES_TOTAL = "deskmate_redeliveries_total"  # what /metrics shows
CONVERSATION = ("http", "http:c1")


@dataclass
class Platform:
    """What the platform received, in order: (in_reply_to, sent as a redelivery)."""

    received: list[tuple[str, bool]] = field(default_factory=list)

    def order(self) -> list[str]:
        return [message_id for message_id, _ in self.received]


class FakeAdapter:
    """An in-memory channel. `cut` makes the first call arrive at the platform and then
    hang until `resume` is set, and fail as a timed-out request: a call cut mid-flight."""

    channel: ClassVar[str] = "http"

    def __init__(self, platform: Platform, *, cut: bool = False) -> None:
        self.platform = platform
        self.cut = cut
        self.in_flight = asyncio.Event()
        self.resume = asyncio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def web_routes(self) -> list[web.RouteDef]:
        return []

    async def send(self, conversation_id: str, reply: Reply) -> str:
        return await self._deliver(reply, redelivery=False)

    async def resend(self, conversation_id: str, reply: Reply) -> str:
        return await self._deliver(reply, redelivery=True)

    async def _deliver(self, reply: Reply, *, redelivery: bool) -> str:
        self.platform.received.append((reply.in_reply_to, redelivery))
        if self.cut:
            self.cut = False
            self.in_flight.set()
            await self.resume.wait()
            raise NetworkError("callback unreachable: timed out")
        return f"platform-{len(self.platform.received)}"


async def queue_replies(redis: aioredis.Redis, *message_ids: str) -> None:
    """Replies in the outbox of one conversation, as brain workers leave them."""
    for message_id in message_ids:
        reply = Reply(f"answer to {message_id}", "answer", in_reply_to=message_id)
        record = Outgoing("http", CONVERSATION[1], reply, time.time()).to_json()
        entry_id = await redis.xadd(KEYS.outbox, {"data": record})
        await redis.rpush(KEYS.queue(KEYS.outbox, *CONVERSATION), entry_id)


def sender(redis: aioredis.Redis, adapter: FakeAdapter, name: str, **options: Any) -> Sender:
    return Sender(redis, KEYS, {"http": adapter}, name, **options)  # type: ignore[dict-item]


async def take(consumer: Sender | BrainWorker, count: int = 1) -> list[Any]:
    await consumer._ensure_group()
    return await consumer._read(">", count=count)


async def test_a_sender_paused_past_its_lock_never_sends_a_stale_reply_after_newer_ones(
    redis: aioredis.Redis,
) -> None:
    platform = Platform()
    # Sender A's process is frozen (SIGSTOP) while its call for m1 is with the platform:
    # it renews nothing, so its lock expires; sender B takes the conversation over.
    paused = FakeAdapter(platform, cut=True)
    a = sender(redis, paused, "a", lock_timeout=0.3, reclaim_idle=0.6)
    b = sender(redis, FakeAdapter(platform), "b", lock_timeout=0.3, reclaim_idle=0.6)
    await queue_replies(redis, "m1", "m2", "m3")
    (m1,) = await take(a)
    a_call = asyncio.create_task(a._handle(*m1))
    await paused.in_flight.wait()
    for entry in await take(b, count=2):
        await asyncio.wait_for(b._handle(*entry), timeout=10)
    # A resumes: its request timed out meanwhile. It must not try m1 again now.
    paused.resume.set()
    await asyncio.wait_for(a_call, timeout=10)
    await asyncio.sleep(0.5)  # a stale retry would arrive now
    order = platform.order()
    assert order == ["m1", "m1", "m2", "m3"]  # the cut call, B's redelivery, then on
    assert platform.received[1] == ("m1", True)  # marked: the receiver may drop it
    assert b.redeliveries == 1 and a.redeliveries == 0
    assert await redis.llen(KEYS.queue(KEYS.outbox, *CONVERSATION)) == 0
    assert await redis.exists(KEYS.delivery(m1[0])) == 0  # finished: its record is gone


async def test_a_reply_the_platform_took_is_not_sent_again_after_its_sender_dies(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = Platform()
    dying = sender(redis, FakeAdapter(platform), "dying", reclaim_idle=0.2)
    heir = sender(redis, FakeAdapter(platform), "heir", reclaim_idle=0.2)
    await queue_replies(redis, "m1", "m2")

    async def killed(*args: object) -> None:  # SIGKILL after the platform answered
        raise asyncio.CancelledError

    monkeypatch.setattr(dying, "_finish_entry", killed)
    for entry in await take(dying, count=2):
        with contextlib.suppress(asyncio.CancelledError):
            await dying._handle(*entry)
    await asyncio.sleep(0.3)
    await heir._ensure_group()
    for entry in await heir._reclaim():
        await heir._handle(*entry)
    assert platform.order() == ["m1", "m2"]  # delivered once each, in order
    assert heir.redeliveries == 0
    assert await redis.xlen(KEYS.outbox) == 0


async def test_a_call_cut_by_a_kill_is_sent_again_once_and_marked(
    redis: aioredis.Redis,
) -> None:
    platform = Platform()
    cut = FakeAdapter(platform, cut=True)
    dying = sender(redis, cut, "dying", reclaim_idle=0.2)
    heir = sender(redis, FakeAdapter(platform), "heir", reclaim_idle=0.2)
    await queue_replies(redis, "m1")
    (m1,) = await take(dying)
    call = asyncio.create_task(dying._handle(*m1))
    await cut.in_flight.wait()
    call.cancel()  # killed while the request was with the platform
    with contextlib.suppress(asyncio.CancelledError):
        await call
    await redis.delete(KEYS.lock("dm:outbox", *CONVERSATION))  # a killed process's expires
    await asyncio.sleep(0.3)
    await heir._ensure_group()
    counted = REGISTRY.get_sample_value(REDELIVERIES_TOTAL, {"channel": "http"}) or 0.0
    for entry in await heir._reclaim():
        await heir._handle(*entry)
    assert platform.received == [("m1", False), ("m1", True)]
    assert heir.redeliveries == 1
    assert REGISTRY.get_sample_value(REDELIVERIES_TOTAL, {"channel": "http"}) == counted + 1


async def test_redis_restarted_empty_is_answered_again(redis: aioredis.Redis) -> None:
    platform = Platform()

    async def answer(inbound: Inbound) -> Reply:
        return Reply(f"answer to {inbound.message_id}", "answer")

    flow = Flow(redis, KEYS, name="t", lock_timeout=2.0, block_seconds=0.1)
    adapter = FakeAdapter(platform)
    async with flow.running(answer, {"http": adapter}, workers=2, senders=2):  # type: ignore[dict-item]
        await flow.intake.submit(Inbound("http", "http:c1", "u", "before", "hi"))
        await wait_until(lambda: platform.order() == ["before"])
        await redis.flushall()  # a failover to an empty replica, a flushed cache
        await asyncio.sleep(0.3)  # consumers meet NOGROUP now
        for n in range(5):
            await flow.intake.submit(Inbound("http", "http:c1", "u", f"after{n}", "hi"))
        await wait_until(lambda: len(platform.received) == 6, timeout=15)
    assert platform.order() == ["before", *(f"after{n}" for n in range(5))]


async def test_a_slow_answer_does_not_stall_the_next_message_behind_a_live_worker(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the fix a worker gave its message up after this long behind a live owner.
    monkeypatch.setattr(consumer_module, "OWNER_WAIT_SECONDS", 0.2, raising=False)
    answered: list[str] = []

    async def slow_answer(inbound: Inbound) -> Reply:
        await asyncio.sleep(0.4)  # a slow model
        answered.append(inbound.message_id)
        return Reply("ok", "answer")

    intake = Intake(redis, KEYS)
    for message_id in ("m1", "m2", "m3"):
        await intake.submit(Inbound("http", "http:c1", "u", message_id, "hi"))
    first, second, third = (BrainWorker(redis, KEYS, slow_answer, f"w{n}") for n in range(3))
    (m1,) = await take(first)
    (m2,) = await take(second)  # a live worker holds m2 and waits for the lock
    (m3,) = await take(third)
    started = time.monotonic()
    one = asyncio.create_task(first._handle(*m1))
    three = asyncio.create_task(third._handle(*m3))  # behind m1 and m2
    await asyncio.sleep(0.6)  # longer than a worker used to wait behind m2's owner
    two = asyncio.create_task(second._handle(*m2))
    await asyncio.wait_for(asyncio.gather(one, two, three), timeout=10)
    assert answered == ["m1", "m2", "m3"]
    assert time.monotonic() - started < 5  # not the 60 s reclaim
    assert await redis.llen(KEYS.queue(KEYS.inbox, "http", "http:c1")) == 0


async def test_history_keeps_a_message_answered_twice_once(redis: aioredis.Redis) -> None:
    """A worker paused after the answer while another one answered the same message
    (reclaimed): both save the turns; the history and the transcripts keep them once."""
    store = ConversationStore(redis, "dm:")
    message = Inbound("http", "http:c1", "u", "m1", "where is my parcel?")
    user = Turn("user", message.text, message_id="m1")
    for _ in range(2):
        await store.append(message, user, Turn("assistant", "It is on its way."))
    await store.append(message, Turn("user", "thanks", message_id="m2"))
    turns = await store.history("http", "http:c1")
    assert [(turn.role, turn.text) for turn in turns] == [
        ("user", "where is my parcel?"),
        ("assistant", "It is on its way."),
        ("user", "thanks"),
    ]
    assert await redis.xlen("dm:transcripts") == 3


async def test_a_burst_larger_than_the_pool_queues_for_connections(tmp_path: Any) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        redis = client(server.url, max_connections=8, pool_timeout=10)
        channel = HttpChannel("http://127.0.0.1:9/unused", Intake(redis, KEYS).handler)
        try:
            async with serve_web(make_web_app(channel.web_routes()), "127.0.0.1:0") as port:
                url = f"http://127.0.0.1:{port}/v1/messages"
                connector = aiohttp.TCPConnector(limit=300)
                async with aiohttp.ClientSession(connector=connector) as session:

                    async def post(n: int) -> int:
                        body = {"conversation_id": f"c{n % 30}", "user_id": "u",
                                "message_id": f"m{n}", "text": "hi"}  # fmt: skip
                        async with session.post(url, json=body) as response:
                            return response.status

                    statuses = await asyncio.gather(*(post(n) for n in range(300)))
            assert statuses.count(202) == 300, sorted(set(statuses))
            assert await redis.xlen(KEYS.inbox) == 300
        finally:
            await redis.aclose()


async def test_http_redelivery_is_marked_for_the_receiver(redis: aioredis.Redis) -> None:
    async with CallbackServer() as callback:
        channel = HttpChannel(callback.url, Intake(redis, KEYS).handler)
        async with channel:
            reply = Reply("It is on its way.", "answer", in_reply_to="m1")
            await channel.send("http:c1", reply)
            await channel.resend("http:c1", reply)
    first, second = (r.body for r in callback.received)
    assert "redelivery" not in first and second["redelivery"] is True
    assert first["in_reply_to"] == second["in_reply_to"] == "m1"


async def wait_until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_redis_failing_before_a_platform_call_leaves_the_reply_pending(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not recorded as undelivered (and dropped): sent once Redis is back."""
    platform = Platform()
    one = sender(redis, FakeAdapter(platform), "one")
    await queue_replies(redis, "m1")
    (m1,) = await take(one)
    begin = one._begin

    async def redis_gone(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(one, "_begin", begin)
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setattr(one, "_begin", redis_gone)
    with pytest.raises(RedisUnavailable):
        await one._handle(*m1)
    assert await redis.xlen(KEYS.undelivered) == 0 and platform.received == []
    await one._handle(*m1)
    assert platform.order() == ["m1"]


async def test_a_batch_never_sits_on_an_entry_another_consumer_waits_for(
    redis: aioredis.Redis,
) -> None:
    """Y holds a's first message (taken, not yet worked on); X's batch (a reclaim) holds
    a's second and b's first; Y works on b's second. Each waits on an entry the other
    holds: before, both waited until `reclaim_idle` made the other look dead. Now X sets
    a1 aside and does b0 at once, so Y goes on; a0 is done when Y's hold on it is stale."""
    answered: list[str] = []

    async def answer(inbound: Inbound) -> Reply:
        answered.append(inbound.message_id)
        return Reply("ok", "answer")

    intake = Intake(redis, KEYS)
    for conversation, message_id in (("a", "a0"), ("a", "a1"), ("b", "b0"), ("b", "b1")):
        await intake.submit(Inbound("http", conversation, "u", message_id, "hi"))
    reclaim_idle = 3.0
    x, y = (BrainWorker(redis, KEYS, answer, name, reclaim_idle=reclaim_idle) for name in "xy")
    await take(y)  # a0: y took it and has not got to it yet
    batch = await take(x, count=2)  # a1, b0
    (b1,) = await take(y)
    started = time.monotonic()
    x_batch = asyncio.create_task(x._handle_batch(batch))
    await asyncio.wait_for(y._handle(*b1), timeout=reclaim_idle / 2)
    assert time.monotonic() - started < reclaim_idle / 2  # not held up by x's a1
    await asyncio.wait_for(x_batch, timeout=3 * reclaim_idle)
    assert answered == ["b0", "b1", "a0", "a1"]
    assert await redis.xlen(KEYS.inbox) == 0
