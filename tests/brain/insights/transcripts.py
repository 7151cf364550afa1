"""Hand-made transcripts with known figures, shared by the insights and dashboard tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from brain.keys import RedisKeys
from brain.transcript_events import transcript_entry

DAY_ONE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()


def turn(role: str, text: str, when: float, **extra: Any) -> dict[str, Any]:
    return {"turn": {"role": role, "text": text, "time": when, **extra}}


def answer(text: str, when: float, source: str) -> dict[str, Any]:
    return turn("assistant", text, when, action="answer", sources=[source], model_version="v1")


def events(t0: float = DAY_ONE) -> list[tuple[str, str, str, dict[str, Any], float]]:
    """(kind, channel, conversation, data, time), in the order they happened.

    Day one: a answered and rated 👍; b clarified then answered; c not covered, handed off,
    claimed after 60 s, answered by an agent, resolved after 120 s, CSAT 5; d answered and
    rated 👎; e asked the same thing twice. Day two: f answered. First replies: 2, 1, 3, 4,
    1 and 5 s. Resolved by the bot: a, b (day one), f (day two).
    """
    return [
        ("turn", "telegram", "a", turn("user", "how do I reset my password", t0), t0),
        ("turn", "telegram", "a", answer("Use the reset link.", t0 + 2, "pw"), t0 + 2),
        ("feedback", "telegram", "a", {"message_id": "", "rating": "up"}, t0 + 10),
        ("turn", "telegram", "b", turn("user", "delivery", t0 + 100), t0 + 100),
        (
            "turn",
            "telegram",
            "b",
            turn("assistant", "Which?", t0 + 101, action="clarify"),
            t0 + 101,
        ),
        ("turn", "telegram", "b", turn("user", "delivery time", t0 + 120), t0 + 120),
        ("turn", "telegram", "b", answer("3 days.", t0 + 124, "ship"), t0 + 124),
        ("turn", "slack", "c", turn("user", "can I buy bitcoin with my card", t0 + 200), t0 + 200),
        (
            "handoff",
            "slack",
            "c",
            {"reason": "not covered by the FAQ", "text": "can I buy bitcoin with my card"},
            t0 + 203,
        ),
        (
            "turn",
            "slack",
            "c",
            turn("assistant", "A person will help.", t0 + 203, action="handoff"),
            t0 + 203,
        ),
        (
            "handoff_state",
            "slack",
            "c",
            {"event": "request", "from": "bot", "to": "requested"},
            t0 + 203,
        ),
        ("handoff_state", "slack", "c", {"event": "claim", "time_to_claim": 60.0}, t0 + 263),
        ("turn", "slack", "c", turn("agent", "No, we do not sell crypto.", t0 + 270), t0 + 270),
        ("handoff_state", "slack", "c", {"event": "resolve", "time_to_resolve": 120.0}, t0 + 323),
        ("handoff_state", "slack", "c", {"event": "rate", "csat": "5"}, t0 + 330),
        ("turn", "slack", "d", turn("user", "what is the card fee", t0 + 400), t0 + 400),
        ("turn", "slack", "d", answer("Fees are listed online.", t0 + 404, "fees"), t0 + 404),
        ("feedback", "slack", "d", {"message_id": "", "rating": "down"}, t0 + 410),
        ("turn", "telegram", "e", turn("user", "refund?", t0 + 500), t0 + 500),
        ("turn", "telegram", "e", answer("Refunds take 5 days.", t0 + 501, "refund"), t0 + 501),
        ("turn", "telegram", "e", turn("user", "refund??", t0 + 600), t0 + 600),
        ("turn", "telegram", "e", answer("Refunds take 5 days.", t0 + 601, "refund"), t0 + 601),
        ("turn", "telegram", "f", turn("user", "opening hours", t0 + 86400), t0 + 86400),
        ("turn", "telegram", "f", answer("9 to 5.", t0 + 86405, "hours"), t0 + 86405),
    ]


async def write(
    redis: aioredis.Redis, items: list[tuple[str, str, str, dict[str, Any], float]]
) -> None:
    key = RedisKeys("dm:").transcripts
    for kind, channel, conversation, data, when in items:
        await redis.xadd(key, transcript_entry(kind, channel, conversation, "u", data, when))
