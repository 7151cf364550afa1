"""The durable message flow in one process: intake, workers, senders and the http channel
on a real Redis, replies received by a fake callback server over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.http_channel import HttpChannel, to_inbound
from bots.serve import format_status
from bots.web import make_web_app, serve_web
from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.flow.stream import Intake, flow_status
from brain.flow.wiring import Flow
from brain.flow.worker import AnswerFunction, BrainWorker
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.redis_server import EmbeddedRedis, client
from brain.types import Inbound
from retrieval.retriever import Retriever
from tests.fakes.callback_server import CallbackServer

KEYS = RedisKeys("dm:")
QUESTIONS = [
    "how do I track my parcel?",
    "how many days do I have to send an item back?",
    "how do I reset my password?",
]


def inbound(message_id: str, conversation: str = "c1", text: str = QUESTIONS[0]) -> Inbound:
    return Inbound("http", f"http:{conversation}", "u1", message_id, text)


@asynccontextmanager
async def running_flow(
    redis: aioredis.Redis,
    answer: AnswerFunction,
    callback_url: str,
    *,
    workers: int = 2,
    senders: int = 2,
    reclaim_idle: float = 60.0,
) -> AsyncIterator[str]:
    """Intake behind the http channel, workers and senders; yields the messages URL."""
    flow = Flow(redis, KEYS, name="test", lock_timeout=2.0, reclaim_idle=reclaim_idle,
                block_seconds=0.1)  # fmt: skip
    channel = HttpChannel(callback_url, flow.intake.handler)
    async with (
        channel,
        serve_web(make_web_app(channel.web_routes()), "127.0.0.1:0") as port,
        flow.running(answer, {"http": channel}, workers=workers, senders=senders),
    ):
        yield f"http://127.0.0.1:{port}/v1/messages"


async def post(
    session: aiohttp.ClientSession, url: str, message_id: str, conversation: str = "c1",
    text: str = QUESTIONS[0],
) -> int:  # fmt: skip
    body = {"conversation_id": conversation, "user_id": "u1", "message_id": message_id,
            "text": text}  # fmt: skip
    async with session.post(url, json=body) as response:
        return response.status


async def post_until_accepted(session: aiohttp.ClientSession, url: str, message_id: str,
                              conversation: str) -> int:  # fmt: skip
    """What a well-behaved platform does: send again until the message is accepted."""
    refusals = 0
    while (status := await post(session, url, message_id, conversation)) == 503:
        refusals += 1
        await asyncio.sleep(0.1)
    assert status == 202, status
    return refusals


async def test_intake_queues_a_message_once_and_in_conversation_order(
    redis: aioredis.Redis,
) -> None:
    intake = Intake(redis, KEYS)
    assert await intake.submit(inbound("m1")) is True
    assert await intake.submit(inbound("m1")) is False  # Slack retry, Telegram redelivery
    assert await intake.submit(inbound("m2")) is True
    # Telegram numbers messages per chat: the same id in another chat is another message.
    assert await intake.submit(inbound("m1", conversation="other")) is True
    entries = await redis.xrange("dm:inbox")
    assert [json.loads(fields["data"])["message_id"] for _, fields in entries] == [
        "m1",
        "m2",
        "m1",
    ]
    assert await redis.lrange("dm:inbox:http:http:c1", 0, -1) == [e for e, _ in entries[:2]]
    assert 0 < await redis.ttl("dm:seen:http:http:c1:m1") <= 86400


async def test_the_same_message_delivered_three_times_gets_one_answer(
    redis: aioredis.Redis, brain: Brain
) -> None:
    async with (
        CallbackServer() as callback,
        aiohttp.ClientSession() as session,
        running_flow(redis, brain.handle, callback.url) as url,
    ):
        statuses = [await post(session, url, "m1") for _ in range(3)]
        assert statuses == [202, 202, 202]
        await post(session, url, "m2", text=QUESTIONS[1])
        await callback.wait_for(2, timeout=20)
        await asyncio.sleep(0.3)  # a second answer would arrive now
    assert callback.counts() == {"m1": 1, "m2": 1}
    first = callback.received[0].body
    assert first["conversation_id"] == "c1" and first["in_reply_to"] == "m1"
    assert first["action"] == "answer" and first["sources"][0]["id"] == "shipping-tracking"
    assert await redis.xlen("dm:inbox") == 0 and await redis.xlen("dm:outbox") == 0


async def test_replies_keep_each_conversations_order_across_workers(
    redis: aioredis.Redis, brain: Brain
) -> None:
    async with (
        CallbackServer() as callback,
        aiohttp.ClientSession() as session,
        running_flow(redis, brain.handle, callback.url, workers=4, senders=3) as url,
    ):
        sent: dict[str, list[str]] = {}
        for n in range(40):
            conversation = f"c{n % 4}"
            sent.setdefault(conversation, []).append(f"m{n}")
            assert await post(session, url, f"m{n}", conversation, QUESTIONS[n % 3]) == 202
        await callback.wait_for(40, timeout=60)
    assert callback.order() == sent
    assert set(callback.counts().values()) == {1}


async def test_work_left_by_a_dead_consumer_is_reclaimed_and_answered_once(
    redis: aioredis.Redis, brain: Brain
) -> None:
    intake = Intake(redis, KEYS)
    for message_id in ("m1", "m2"):
        await intake.submit(inbound(message_id))
    # A worker takes both messages and dies before finishing them.
    dead = BrainWorker(redis, KEYS, brain.handle, "dead-worker")
    await dead._ensure_group()
    taken = await dead._read(">", count=2)
    assert len(taken) == 2
    async with (
        CallbackServer() as callback,
        running_flow(redis, brain.handle, callback.url, reclaim_idle=0.3),
    ):
        await callback.wait_for(2, timeout=20)
        # The "dead" worker was only slow: its late finish must not answer again.
        late = await dead.process(inbound("m1"))
        await dead._finish_entry(taken[0][0], ("http", "http:c1"), late)
        await asyncio.sleep(0.3)
    assert callback.order() == {"c1": ["m1", "m2"]}
    assert (await redis.xpending("dm:inbox", "brain"))["pending"] == 0


async def test_sender_waits_out_rate_limits_and_server_errors(
    redis: aioredis.Redis, brain: Brain
) -> None:
    async with CallbackServer() as callback, aiohttp.ClientSession() as session:
        callback.fail_with = [(429, {"Retry-After": "0.5"}), (503, {})]
        async with running_flow(redis, brain.handle, callback.url) as url:
            started = time.monotonic()
            await post(session, url, "m1")
            await callback.wait_for(1, timeout=20)
            waited = time.monotonic() - started
            await asyncio.sleep(0.2)
    assert callback.fail_with == []  # both failures were met, then the reply got through
    assert callback.counts() == {"m1": 1}
    assert waited >= 0.5  # the platform's retry_after was honoured


async def test_a_permanent_delivery_failure_is_recorded_not_retried(
    redis: aioredis.Redis, brain: Brain
) -> None:
    async with CallbackServer() as callback, aiohttp.ClientSession() as session:
        callback.fail_with = [(400, {})]
        async with running_flow(redis, brain.handle, callback.url) as url:
            await post(session, url, "m1")
            deadline = time.monotonic() + 20
            while not await redis.xlen("dm:undelivered") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
    assert callback.received == []
    (_, failure), *_ = await redis.xrange("dm:undelivered")
    assert failure["in_reply_to"] == "m1" and "400" in failure["error"]
    assert await redis.xlen("dm:outbox") == 0


async def test_a_message_to_a_conversation_a_person_holds_is_recorded_and_not_answered(
    redis: aioredis.Redis, brain: Brain
) -> None:
    await brain.store.start_handoff("http", "http:c1", "asked for a person")
    async with (
        CallbackServer() as callback,
        aiohttp.ClientSession() as session,
        running_flow(redis, brain.handle, callback.url) as url,
    ):
        assert await post(session, url, "m1") == 202
        deadline = time.monotonic() + 20
        while await redis.xlen("dm:inbox") or await redis.xlen("dm:outbox"):
            assert time.monotonic() < deadline, "the held message was not finished"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # a reply would arrive now
    assert callback.received == []  # the silent reply went through the outbox, unposted
    assert [turn.text for turn in await brain.store.history("http", "http:c1")] == [QUESTIONS[0]]


async def test_http_channel_refuses_bad_requests_and_wrong_tokens(redis: aioredis.Redis) -> None:
    channel = HttpChannel("http://127.0.0.1:9/unused", Intake(redis, KEYS).handler, token="s3")
    good = {"conversation_id": "c1", "user_id": "u1", "message_id": "m1", "text": "hi"}
    async with serve_web(make_web_app(channel.web_routes()), "127.0.0.1:0") as port:
        url = f"http://127.0.0.1:{port}/v1/messages"
        auth = {"Authorization": "Bearer s3"}
        async with aiohttp.ClientSession() as session:
            cases = [
                ({}, json.dumps(good), 401),
                ({"Authorization": "Bearer nope"}, json.dumps(good), 401),
                (auth, "not json", 400),
                (auth, json.dumps({**good, "message_id": ""}), 400),
                (auth, json.dumps([good]), 400),
                (auth, json.dumps(good), 202),
            ]
            for headers, body, expected in cases:
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == expected, (headers, body)
    assert await redis.xlen("dm:inbox") == 1


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"conversation_id": "c", "user_id": "u", "message_id": 7, "text": "x"}, None),
        ({"conversation_id": "c", "user_id": "u", "message_id": "m", "text": ""}, None),
        ({"conversation_id": "c", "user_id": "u", "message_id": "m"}, "text"),
        ({"conversation_id": " ", "user_id": "u", "message_id": "m", "text": "x"}, "conversation"),
        ({"conversation_id": "c", "user_id": True, "message_id": "m", "text": "x"}, "user_id"),
        ({"conversation_id": "c" * 300, "user_id": "u", "message_id": "m", "text": "x"}, "longer"),
    ],
)
def test_http_to_inbound(payload: dict[str, object], problem: str | None) -> None:
    if problem is None:
        message = to_inbound(payload)
        assert message.channel == "http" and message.conversation_id == "http:c"
        assert message.message_id == str(payload["message_id"])
    else:
        with pytest.raises(ValueError, match=problem):
            to_inbound(payload)


async def test_redis_outage_under_traffic_loses_nothing(
    tmp_path: Path, retriever: Retriever
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    redis = client(server.url)
    brain = Brain(retriever, ConversationStore(redis, "dm:"), QuoteBackend())
    refused = 0
    try:
        async with (
            CallbackServer() as callback,
            aiohttp.ClientSession() as session,
            running_flow(redis, brain.handle, callback.url, reclaim_idle=30) as url,
        ):

            async def traffic(conversation: str) -> None:
                nonlocal refused
                for n in range(15):
                    message_id = f"{conversation}-m{n}"
                    refused += await post_until_accepted(session, url, message_id, conversation)
                    await asyncio.sleep(0.05)

            senders = asyncio.gather(*(traffic(f"c{n}") for n in range(4)))
            await callback.wait_for(5, timeout=20)
            server.stop()  # SIGTERM: Redis writes its AOF and exits
            await asyncio.sleep(2.0)
            server.start()  # same directory: the AOF brings the queues back
            await senders
            await callback.wait_for(60, timeout=60)
            await asyncio.sleep(0.3)
    finally:
        await redis.aclose()
        server.stop()
    assert refused > 0  # the outage was felt: intake refused while Redis was down
    assert len(callback.counts()) == 60 and set(callback.counts().values()) == {1}
    for conversation, replies in callback.order().items():
        assert replies == [f"{conversation}-m{n}" for n in range(15)]


async def test_status_shows_queues_pending_processes_and_model(redis: aioredis.Redis) -> None:
    intake = Intake(redis, KEYS)
    for n in range(3):
        await intake.submit(inbound(f"m{n}"))
    worker = BrainWorker(redis, KEYS, QuoteBackend, "w")  # type: ignore[arg-type]
    await worker._ensure_group()
    await worker._read(">", count=1)
    await redis.set("dm:model:active", "support-v3")
    await redis.set(
        "dm:process:host-1",
        json.dumps(
            {
                "name": "host-1",
                "workers": 4,
                "senders": 2,
                "channels": ["http"],
                "started": time.time() - 90,
            }
        ),
        ex=15,
    )
    status = await flow_status(redis, KEYS)
    inbox, outbox = status.streams
    assert (inbox.length, inbox.pending, outbox.length) == (3, 1, 0)
    assert inbox.oldest_age is not None and 0 <= inbox.oldest_age < 60
    assert status.workers == 4 and status.model_version == "support-v3"
    table = format_status(status)
    assert "processes alive: 1 (4 brain workers, 2 senders)" in table
    assert "active model: support-v3" in table
