"""deskmate on a real Redis Cluster (three masters) and on a primary with a replica
watched by Sentinel, failing over while messages flow: every message answered once."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar, Self

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from aiohttp import web

from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.flow.stream import Intake, flow_status
from brain.flow.upgrade import requeue_legacy_entries
from brain.flow.wiring import Flow
from brain.handoff.machine import Handoffs
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.redis_server import RedisUnavailable, connect, open_redis
from brain.settings import Settings
from brain.types import Inbound, Reply
from retrieval.retriever import Retriever
from tests.redis_nodes import (
    SERVICE,
    Node,
    free_ports,
    start_cluster,
    start_sentinel,
    topology,
    wait_for_new_primary,
)


class Recorder:
    """A channel that records every reply it is asked to deliver."""

    channel: ClassVar[str] = "http"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (conversation id, in reply to)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def web_routes(self) -> list[web.RouteDef]:
        return []

    async def send(self, conversation_id: str, reply: Reply) -> None:
        self.sent.append((conversation_id, reply.in_reply_to))

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.sent) < count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)


def message(conversation: int, number: int, text: str = "") -> Inbound:
    return Inbound("http", f"c{conversation}", "u1", f"c{conversation}-m{number}",
                   text or f"question {number}")  # fmt: skip


async def submit_until_accepted(intake: Intake, inbound: Inbound) -> None:
    """What a platform does: send again until deskmate acknowledges the message."""
    while True:
        try:
            await intake.submit(inbound)  # False (a repeat) is an acknowledgement too
            return
        except RedisUnavailable:
            await asyncio.sleep(0.05)


def assert_answered_once_in_order(sent: list[tuple[str, str]], expected: list[Inbound]) -> None:
    counts = Counter(in_reply_to for _, in_reply_to in sent)
    assert {m.message_id for m in expected} == set(counts), "a message was not answered"
    assert [k for k, n in counts.items() if n > 1] == [], "a message was answered twice"
    for conversation in {m.conversation_id for m in expected}:
        answered = [reply for c, reply in sent if c == conversation]
        asked = [m.message_id for m in expected if m.conversation_id == conversation]
        assert answered == asked, f"{conversation} answered out of order"


# -- Redis Cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with topology(tmp_path_factory.mktemp("cluster")) as nodes:
        yield start_cluster(nodes)


@pytest.fixture
async def cluster_redis(cluster: list[Node]) -> AsyncIterator[tuple[aioredis.Redis, Settings]]:
    for node in cluster:
        node.client().flushall()
    url = "redis+cluster://" + ",".join(node.address for node in cluster[:2])
    settings = Settings.load({"DESKMATE_REDIS_URL": url})
    async with open_redis(settings.redis_url, Path("unused")) as redis:
        yield redis, settings


async def test_a_cluster_url_tags_the_prefix_and_the_default_stays(cluster: list[Node]) -> None:
    url = f"redis+cluster://{cluster[0].address}"
    assert Settings.load({"DESKMATE_REDIS_URL": url}).redis_prefix == "{dm}:"
    assert Settings.load({"DESKMATE_REDIS_URL": url, "DESKMATE_REDIS_PREFIX": "acme:"}
                         ).redis_prefix == "{acme}:"  # fmt: skip
    assert Settings.load({"DESKMATE_REDIS_URL": url, "DESKMATE_REDIS_PREFIX": "{acme}:bot:"}
                         ).redis_prefix == "{acme}:bot:"  # fmt: skip
    assert Settings.load({"DESKMATE_REDIS_URL": "redis://127.0.0.1:1"}).redis_prefix == "dm:"


async def test_messages_handoffs_and_status_work_on_a_cluster(
    cluster_redis: tuple[aioredis.Redis, Settings], retriever: Retriever, cluster: list[Node]
) -> None:
    """The flow's scripts, the history's and the handoff machine's transactions (WATCH),
    the SCANs of the start-up upgrades and of `deskmate status`, across three masters."""
    redis, settings = cluster_redis
    keys = RedisKeys(settings.redis_prefix)
    store = ConversationStore(redis, settings.redis_prefix, history_turns=6, ttl_seconds=600)
    brain = Brain(retriever, store, QuoteBackend())
    assert await requeue_legacy_entries(redis, keys) == 0
    assert await Handoffs(redis, settings.redis_prefix).index_earlier_records() == 0
    recorder = Recorder()
    flow = Flow(redis, keys, name="cluster", lock_timeout=2.0, block_seconds=0.1)
    questions = ["how do I track my parcel?", "how do I reset my password?", "/human",
                 "are you there?"]  # fmt: skip
    expected = [message(c, n, text) for n, text in enumerate(questions) for c in range(4)]
    async with flow.running(brain.handle, {"http": recorder}, workers=2, senders=2):
        for inbound in expected:
            assert await flow.intake.submit(inbound)
        assert not await flow.intake.submit(expected[0])  # a platform's retry
        await recorder.wait_for(len(expected), timeout=30)
        status = await flow_status(redis, keys)
    assert_answered_once_in_order(recorder.sent, expected)
    assert [(s.name, s.length) for s in status.streams] == [("inbox", 0), ("outbox", 0)]
    handoff = await Handoffs(redis, settings.redis_prefix).get("http", "c1")
    assert handoff.held
    history = await store.history("http", "c2")
    assert {turn.role for turn in history} == {"user", "assistant"}
    # Every key of the deployment sits in the one slot its hash tag names, on one master.
    holding = [node for node in cluster if node.client().dbsize()]
    assert len(holding) == 1
    node = holding[0].client()
    slots = {node.cluster("keyslot", key) for key in node.scan_iter()}
    assert slots == {redis.keyslot(keys.inbox)}  # type: ignore[attr-defined]


def test_the_readmes_move_onto_a_cluster_keeps_lifetimes_and_pending_entries(
    cluster: list[Node], tmp_path: Path
) -> None:
    """The README's two commands, run as written: rename on the old server, import."""
    for node in cluster:
        node.client().flushall()
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rename = re.search(r'EVAL "(.*?)" 0', readme, re.S)
    assert rename is not None
    with topology(tmp_path) as nodes:
        old_node = nodes.start("old", free_ports(1)[0])
        old = old_node.client()
        old.set("dm:seen:http:c1:m1", "1", ex=600)
        old.xadd("dm:inbox", {"data": "{}"})
        old.xgroup_create("dm:inbox", "brain", id="0")
        old.xreadgroup("brain", "worker", {"dm:inbox": ">"})  # taken, not finished
        old.eval(rename.group(1), 0)
        command = ["--cluster", "import", cluster[0].address, "--cluster-from", old_node.address]
        subprocess.run(
            [nodes.cli, *command, "--cluster-copy"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    moved = sync_redis.RedisCluster("127.0.0.1", cluster[0].port, decode_responses=True)
    assert 0 < moved.ttl("{dm}:seen:http:c1:m1") <= 600
    assert moved.xpending("{dm}:inbox", "brain")["pending"] == 1
    moved.close()


# -- Sentinel ---------------------------------------------------------------------------

CONVERSATIONS = 6
PER_CONVERSATION = 40


async def answer(inbound: Inbound) -> Reply:
    return Reply(f"answer to {inbound.text}", "answer")


@contextlib.asynccontextmanager
async def traffic_through(
    sentinel: Node, primary: Node, recorder: Recorder
) -> AsyncIterator[asyncio.Task[list[Inbound]]]:
    """The flow on the Sentinel's primary, and a platform sending CONVERSATIONS x
    PER_CONVERSATION messages at a steady pace (the task returns them, in order sent)."""
    url = f"redis+sentinel://{sentinel.address}/{SERVICE}"
    settings = Settings.load({"DESKMATE_REDIS_URL": url})
    redis = connect(url, wait_replicas=settings.redis_wait_replicas)
    assert await redis.ping()
    assert int((await redis.info("server"))["tcp_port"]) == primary.port
    keys = RedisKeys(settings.redis_prefix)
    # Longer than a failover, as the default (60 s) is: a consumer whose step was not
    # confirmed takes its entry back itself, remembering the work done (a reclaim by
    # another sender would deliver a reply again: delivery is at-least-once).
    flow = Flow(redis, keys, name="sentinel", lock_timeout=2.0, reclaim_idle=30.0,
                block_seconds=0.2)  # fmt: skip

    async def platform() -> list[Inbound]:
        sent = []
        for number in range(PER_CONVERSATION):
            for conversation in range(CONVERSATIONS):
                inbound = message(conversation, number)
                await submit_until_accepted(flow.intake, inbound)
                sent.append(inbound)
            await asyncio.sleep(0.03)
        return sent

    try:
        async with flow.running(answer, {"http": recorder}, workers=2, senders=2,
                                stop_timeout=30):  # fmt: skip
            yield asyncio.create_task(platform())
    finally:
        await redis.aclose()


async def failover_under_traffic(root: Path, fail: str) -> None:
    with topology(root) as nodes:
        primary, replicas, sentinel = start_sentinel(nodes)
        recorder = Recorder()
        async with traffic_through(sentinel, primary, recorder) as platform:
            await recorder.wait_for(CONVERSATIONS * 8, timeout=20)  # traffic is flowing
            answered_before = len(recorder.sent)
            if fail == "kill":
                primary.kill()
            else:  # the planned switchover the README describes: pause writes, then fail over
                primary.client().client_pause(3000, all=False)  # writes only
                sentinel.client().sentinel_failover(SERVICE)
            port = await asyncio.to_thread(wait_for_new_primary, sentinel, primary.port)
            sent = await asyncio.wait_for(platform, 40)
            await recorder.wait_for(len(sent), timeout=40)
            await asyncio.sleep(0.5)  # a repeated answer would arrive now
        assert answered_before < len(sent), "the failover came after the traffic"
        assert_answered_once_in_order(recorder.sent, sent)
        new_primary = next(node for node in replicas if node.port == port)
        assert new_primary.client().xlen("dm:inbox") == 0
        assert new_primary.client().xlen("dm:outbox") == 0


async def test_a_planned_switchover_under_traffic_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    await failover_under_traffic(tmp_path, "failover")


async def test_the_primary_killed_under_traffic_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    await failover_under_traffic(tmp_path, "kill")
