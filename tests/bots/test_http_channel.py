"""The http channel against hostile requests: whatever a client sends is a 202 or a 4xx,
never a 500 (a client retrying 5xx would loop forever), on a real Redis over real HTTP."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from bots.http_channel import HttpChannel, to_inbound
from bots.web import make_web_app, parse_json, serve_web
from brain.flow.stream import Intake, inbound_from_json, inbound_to_json
from brain.keys import RedisKeys
from tests.hostile import ANY_TEXT, FUZZ

KEYS = RedisKeys("dm:")
GOOD = {"conversation_id": "c1", "user_id": "u1", "message_id": "m1", "text": "hi"}


async def post_all(
    redis: aioredis.Redis, bodies: list[tuple[bytes, dict[str, str]]], token: str = ""
) -> list[int]:
    """POST each body to a running http channel; the statuses, in order."""
    channel = HttpChannel("http://127.0.0.1:9/unused", Intake(redis, KEYS).handler, token=token)
    statuses = []
    async with (
        channel,
        serve_web(make_web_app(channel.web_routes()), "127.0.0.1:0") as port,
        aiohttp.ClientSession() as session,
    ):
        for body, headers in bodies:
            url = f"http://127.0.0.1:{port}/v1/messages"
            async with session.post(url, data=body, headers=headers) as response:
                statuses.append(response.status)
    return statuses


async def queued(redis: aioredis.Redis) -> list[dict[str, Any]]:
    entries = await redis.xrange("dm:inbox")
    return [json.loads((fields or {})["data"]) for _, fields in entries or []]


async def test_a_lone_surrogate_is_accepted_as_a_replacement_character(
    redis: aioredis.Redis,
) -> None:
    # What a widget sends when it cuts "😀" between its two UTF-16 halves.
    body = b'{"conversation_id": "c\\ud83d", "user_id": "u1", "message_id": "m1", '
    body += b'"text": "my parcel \\ud800 is late"}'
    assert await post_all(redis, [(body, {"Content-Type": "application/json"})]) == [202]
    [message] = await queued(redis)
    assert message["text"] == "my parcel \ufffd is late"
    assert message["conversation_id"] == "http:c\ufffd"


async def test_deep_nesting_and_broken_bodies_are_refused_with_400(
    redis: aioredis.Redis,
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_inside = json.dumps(GOOD)[:-1].encode() + b', "extra": ' + deep + b"}"
    bodies = [
        deep,
        deep_inside,
        b"\xff\xfe not utf-8",
        b"",
        b"null",
        b'{"text": ' + b'"' + b"a" * 10 + b"}",
        json.dumps({**GOOD, "text": None}).encode(),
        json.dumps({**GOOD, "text": {"nested": [1, 2]}}).encode(),
    ]
    statuses = await post_all(redis, [(body, {}) for body in bodies])
    assert statuses == [400] * len(bodies)
    assert await redis.xlen("dm:inbox") == 0


async def test_the_bearer_scheme_is_case_insensitive(redis: aioredis.Redis) -> None:
    body = json.dumps(GOOD).encode()
    headers = [
        {"Authorization": "bearer s3"},
        {"Authorization": "BEARER s3"},
        {"Authorization": "Bearer  s3 "},
        {"Authorization": "Basic s3"},
        {"Authorization": "Bearer"},
        {"Authorization": "s3"},
    ]
    statuses = await post_all(redis, [(body, h) for h in headers], token="s3")
    assert statuses == [202, 202, 202, 401, 401, 401]


async def test_running_without_a_token_is_warned_about(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bots.http_channel"):
        async with HttpChannel("http://127.0.0.1:9/unused", Intake(redis, KEYS).handler):
            pass
        assert "DESKMATE_HTTP_TOKEN is not set" in caplog.text
        caplog.clear()
        async with HttpChannel("http://127.0.0.1:9/x", Intake(redis, KEYS).handler, token="t"):
            pass
        assert "DESKMATE_HTTP_TOKEN" not in caplog.text


# Fuzz: what the endpoint does with a body, short of Redis. Every body is either refused
# with a ValueError (a 400) or becomes a message that can be queued (encodable as UTF-8).

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = st.one_of(ANY_TEXT, st.integers(), JSON_VALUES)


def accepted_or_refused(body: bytes) -> None:
    try:
        inbound = to_inbound(parse_json(body))
    except ValueError:
        return
    record = inbound_to_json(inbound)
    record.encode("utf-8")  # what Redis needs
    assert inbound_from_json(record) == inbound


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_any_bytes_are_refused_or_queueable(body: bytes) -> None:
    accepted_or_refused(body)


@FUZZ
@given(st.dictionaries(st.sampled_from([*GOOD, "other"]), FIELD_VALUES, max_size=6))
def test_fuzz_any_json_object_is_refused_or_queueable(payload: dict[str, Any]) -> None:
    # json.dumps keeps lone surrogates as \\ud800 escapes, as a browser's JSON.stringify does.
    accepted_or_refused(json.dumps(payload).encode())


@FUZZ
@given(ANY_TEXT, st.integers(min_value=0, max_value=5))
def test_fuzz_message_text_survives_with_any_characters(text: str, depth: int) -> None:
    payload: Any = {**GOOD, "text": text}
    accepted_or_refused(json.dumps(payload).encode())
    for _ in range(depth):
        payload = [payload]
    accepted_or_refused(json.dumps(payload).encode())
