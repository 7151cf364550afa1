"""The report's figures, folded incrementally from hand-made transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bots.cli import main
from brain.insights.aggregates import Insights
from brain.insights.report import build_report
from brain.redis_server import EmbeddedRedis
from tests.brain.insights.transcripts import DAY_ONE, events, write

LATER = DAY_ONE + 10 * 86400


async def test_figures_of_hand_made_transcripts(redis: aioredis.Redis) -> None:
    insights = Insights(redis, "dm:", window=600.0)
    history = events()
    await write(redis, history[:12])
    await insights.update(now=DAY_ONE + 265)  # mid-conversation: c still open
    await insights.update(now=DAY_ONE + 265)  # folding again adds nothing
    await write(redis, history[12:])
    await insights.update(now=LATER)

    day_one = build_report(
        "2026-03-02", "2026-03-02", await insights.days("2026-03-02", "2026-03-02")
    )
    assert day_one.conversations == 5 and day_one.finished == 5
    assert day_one.by_day == {"2026-03-02": {"telegram": 3, "slack": 2}}
    assert day_one.answered_rate == 0.8  # a, b, d, e
    assert day_one.clarified_rate == 0.2  # b
    assert day_one.handed_off_rate == 0.2  # c
    assert day_one.resolved_by_bot_rate == 0.4  # a, b: not c (handed off), d (👎), e (asked again)
    assert day_one.ratings == {"up": 1, "down": 1}
    assert day_one.median_first_reply_seconds == pytest.approx(2.0, rel=0.05)
    assert day_one.handoffs == {"request": 1, "claim": 1, "resolve": 1, "rate": 1}
    assert day_one.median_time_to_claim_seconds == pytest.approx(60.0, rel=0.05)
    assert day_one.median_time_to_resolve_seconds == pytest.approx(120.0, rel=0.05)
    assert day_one.csat == {"5": 1}
    assert day_one.models == {"v1": 5}
    assert day_one.messages == {"telegram": 5, "slack": 2}

    both = build_report("2026-03-01", "2026-03-05", await insights.days("2026-03-01", "2026-03-05"))
    assert both.conversations == 6 and both.resolved_by_bot_rate == 0.5

    gaps = await insights.gap_questions()
    by_question = {gap["question"]: gap for gap in gaps}
    assert set(by_question) == {"can I buy bitcoin with my card", "what is the card fee"}
    assert (
        by_question["can I buy bitcoin with my card"]["agent_answer"]
        == "No, we do not sell crypto."
    )
    assert by_question["what is the card fee"]["why"] == "rated down"


async def test_a_clarification_never_followed_by_an_answer_is_a_gap(redis: aioredis.Redis) -> None:
    insights = Insights(redis, "dm:")
    history = [e for e in events() if e[2] == "b"][:2]  # the clarification, no answer after
    await write(redis, history)
    await insights.update(now=LATER)
    assert [g["question"] for g in await insights.gap_questions()] == ["delivery"]


def test_report_command_prints_json(
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    from brain.redis_server import client

    async def seed() -> None:
        connection = client(redis_server.url)
        await connection.flushall()
        await write(connection, events())
        await connection.aclose()

    asyncio.run(seed())
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DESKMATE_REDIS_URL", redis_server.url)
    assert main(["report", "--since", "2026-03-02", "--until", "2026-03-02", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["conversations"] == 5 and figures["resolved_by_bot_rate"] == 0.4
    assert main(["report", "--since", "2026-03-02"]) == 0
    assert "resolved by the bot" in capsys.readouterr().out


def _mood(label: str, anger: float, sentiment: float) -> dict[str, object]:
    return {"label": label, "anger": anger, "sentiment": sentiment, "source": "v3"}


async def test_moods_and_handoff_reasons_are_counted(redis: aioredis.Redis) -> None:
    from brain.transcript_events import transcript_entry
    from tests.brain.insights.transcripts import answer, turn

    t0 = DAY_ONE
    items = [
        ("turn", "g", turn("user", "where is my order", t0, mood=_mood("", 0.01, 0.0)), t0),
        ("turn", "g", answer("On its way.", t0 + 1, "ship"), t0 + 1),
        (
            "turn",
            "h",
            turn("user", "this is a joke!!", t0 + 5, mood=_mood("anger", 0.9, -0.8)),
            t0 + 5,
        ),
        ("handoff", "h", {"reason": "angry customer: anger 0.90 (strong: at least 0.80)"}, t0 + 6),
        ("turn", "i", turn("user", "thanks, lovely", t0 + 9, mood=_mood("joy", 0.0, 0.6)), t0 + 9),
        ("turn", "i", turn("user", "do you sell boats", t0 + 12), t0 + 12),  # no mood read
        ("handoff", "i", {"reason": "not covered by the FAQ"}, t0 + 13),
    ]
    for kind, conversation, data, when in items:
        await redis.xadd(
            "dm:transcripts", transcript_entry(kind, "telegram", conversation, "u", data, when)
        )
    insights = Insights(redis, "dm:")
    await insights.update(now=LATER)
    report = build_report(
        "2026-03-02", "2026-03-02", await insights.days("2026-03-02", "2026-03-02")
    )
    assert report.moods == {"neutral": 1, "anger": 1, "joy": 1}
    assert report.moods_by_day == {"2026-03-02": {"neutral": 1, "anger": 1, "joy": 1}}
    assert report.mean_sentiment == pytest.approx((0.0 - 0.8 + 0.6) / 3, abs=0.001)
    assert report.angry_message_rate == pytest.approx(1 / 3, abs=0.001)
    assert report.angry_conversation_rate == pytest.approx(1 / 3, abs=0.001)  # h of g, h, i
    assert report.handoff_reasons == {"angry customer": 1, "not covered": 1}
    text = report.render()
    assert "angry customer 1" in text and "anger 1" in text and "angry conversations 33.3%" in text
