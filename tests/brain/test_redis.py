"""The embedded Redis server, and Redis that is down or goes away mid-conversation."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bots.console import run_console
from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.pipeline import Brain
from brain.redis_server import (
    EmbeddedRedis,
    RedisUnavailable,
    client,
    is_cluster_url,
    open_redis,
    parse_url,
)
from brain.types import Inbound
from retrieval.retriever import Retriever


async def test_embedded_server_is_real_redis_with_aof(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        connection = client(server.url)
        await connection.set("k", "v")
        config = await connection.config_get("appendonly")
        info = await connection.info("server")
        await connection.aclose()
    assert config == {"appendonly": "yes"}
    assert info["redis_version"]
    assert not server.socket_path.exists() or not server._process


async def test_data_survives_a_restart_on_the_same_directory(tmp_path: Path) -> None:
    async with open_redis(None, tmp_path) as connection:
        await connection.rpush("dm:conv:x", "turn")
    async with open_redis(None, tmp_path) as connection:
        assert await connection.lrange("dm:conv:x", 0, -1) == ["turn"]


async def test_a_second_process_shares_the_running_server(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        second = EmbeddedRedis(tmp_path)
        second.start()
        assert second._process is None  # reused, not started
        second.stop()  # leaves the first one running
        connection = client(first.url)
        assert await connection.ping()
        await connection.aclose()


async def test_unreachable_redis_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RedisUnavailable) as error:
        async with open_redis("redis://127.0.0.1:1/0", tmp_path):
            pass
    assert "DESKMATE_REDIS_URL" in str(error.value)
    assert "127.0.0.1:1" in str(error.value)


def test_cluster_and_sentinel_urls_are_taken_apart() -> None:
    cluster = parse_url("redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001")
    assert cluster.cluster and cluster.nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert (cluster.username, cluster.password) == ("u", "p@ss")
    sentinel = parse_url("redis+sentinel://s1:26379,s2:26380/mymaster/3")
    assert not sentinel.cluster
    assert (sentinel.nodes, sentinel.service, sentinel.db) == (
        (("s1", 26379), ("s2", 26380)), "mymaster", 3)  # fmt: skip
    assert is_cluster_url("rediss+cluster://h:1") and not is_cluster_url("redis://h:1")


async def test_malformed_cluster_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RedisUnavailable) as error:
        async with open_redis("redis+sentinel://user:hunter2@127.0.0.1:1", tmp_path):
            pass
    assert "DESKMATE_REDIS_URL must name the monitored primary" in str(error.value)
    assert "hunter2" not in str(error.value)


async def test_password_in_url_is_not_shown(tmp_path: Path) -> None:
    with pytest.raises(RedisUnavailable) as error:
        async with open_redis("redis://user:hunter2@127.0.0.1:1/0", tmp_path):
            pass
    assert "hunter2" not in str(error.value)


async def test_redis_going_away_mid_conversation(tmp_path: Path, retriever: Retriever) -> None:
    """The console keeps running, says what is wrong, and answers again once Redis is back."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    connection = client(server.url, retries=1)
    brain = Brain(retriever, ConversationStore(connection), QuoteBackend())
    inbound = Inbound("console", "c", "u", "1", "how do I track my parcel?")
    assert (await brain.handle(inbound)).action == "answer"

    server.stop()
    with pytest.raises(RedisUnavailable, match="Redis failed while"):
        await brain.handle(inbound)
    out = io.StringIO()
    await run_console(
        brain, io.StringIO("how do I track my parcel?\n"), out, prompt=False, retry_delays=(0.01,)
    )
    assert "retrying" in out.getvalue()
    assert "send it again once Redis is back" in out.getvalue()
    assert out.getvalue().rstrip().endswith("Bye!")  # the session ended normally

    server.start()  # same directory: AOF brings the history back
    try:
        reply = await brain.handle(Inbound("console", "c", "u", "2", "how do I track my parcel?"))
        assert reply.action == "answer"
        history = await ConversationStore(connection).history("console", "c")
        assert [t.role for t in history] == ["user", "assistant", "user", "assistant"]
    finally:
        await connection.aclose()
        server.stop()
