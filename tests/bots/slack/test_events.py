"""Slack payloads -> Inbound / Feedback: the pure translation, table-driven."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.slack.adapter import (
    conversation_id,
    parse_conversation,
    plain_text,
    to_feedback,
    to_inbound,
)
from brain.flow.stream import inbound_to_json
from brain.types import Feedback
from tests.hostile import ANY_TEXT, FUZZ

BOT = "UBOT"
TS = "1700000000.000100"
THREAD = "1699999999.000050"


def message(**fields: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "channel_type": "im",
        "channel": "D1",
        "user": "U1",
        "text": "where is my order?",
        "ts": TS,
        **fields,
    }


def mention(**fields: Any) -> dict[str, Any]:
    return {
        "type": "app_mention",
        "channel": "C1",
        "user": "U1",
        "text": "<@UBOT> where is my order?",
        "ts": TS,
        **fields,
    }


# (case, event, expected (conversation_id, text, is_group) or None)
CASES: list[tuple[str, dict[str, Any], tuple[str, str, bool] | None]] = [
    ("direct message", message(), ("D1", "where is my order?", False)),
    (
        "direct message in a thread",
        message(thread_ts=THREAD),
        (f"D1:{THREAD}", "where is my order?", False),
    ),
    (
        "mention starts a thread at the question",
        mention(),
        (f"C1:{TS}", "where is my order?", True),
    ),
    (
        "mention inside a thread joins it",
        mention(thread_ts=THREAD),
        (f"C1:{THREAD}", "where is my order?", True),
    ),
    (
        "entities unescaped, links by label",
        message(text="is 5 &lt; 7 &amp; <https://x.example|x>?"),
        ("D1", "is 5 < 7 & x?", False),
    ),
    (
        "other mentions kept readable",
        mention(text="<@UBOT> ask <@U9|ann> in <#C7|help>"),
        (f"C1:{TS}", "ask @ann in #help", True),
    ),
    ("own message", message(user=BOT), None),
    ("own message posted as bot", message(user=BOT, bot_id="BBOT"), None),
    ("another bot", message(user="U7", bot_id="B7"), None),
    ("bot without user", message(user=None, bot_id="B7", subtype="bot_message"), None),
    ("edit", message(subtype="message_changed"), None),
    ("deletion", message(subtype="message_deleted"), None),
    ("join", message(subtype="channel_join", channel_type="channel"), None),
    ("channel message without a mention", message(channel_type="channel", channel="C1"), None),
    ("mention in a DM arrives as a message too", mention(channel="D1"), None),
    ("other event types", {"type": "reaction_added", "user": "U1"}, None),
    ("missing ts", message(ts=None), None),
]


@pytest.mark.parametrize(("case", "event", "expected"), CASES, ids=[c[0] for c in CASES])
def test_to_inbound(
    case: str, event: dict[str, Any], expected: tuple[str, str, bool] | None
) -> None:
    inbound = to_inbound(event, BOT)
    if expected is None:
        assert inbound is None
        return
    assert inbound is not None
    assert (inbound.conversation_id, inbound.text, inbound.is_group) == expected
    assert inbound.channel == "slack" and inbound.user_id == "U1" and inbound.message_id == TS
    assert inbound.mentioned == inbound.is_group
    assert inbound.time == float(TS)


def test_staff_flag_comes_from_the_staff_list() -> None:
    assert to_inbound(message(), BOT, frozenset({"U1"})).is_staff  # type: ignore[union-attr]
    assert not to_inbound(message(), BOT, frozenset({"U2"})).is_staff  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("channel", "thread", "conversation"),
    [("D1", None, "D1"), ("C1", THREAD, f"C1:{THREAD}")],
)
def test_conversation_ids_round_trip(channel: str, thread: str | None, conversation: str) -> None:
    assert conversation_id(channel, thread) == conversation
    assert parse_conversation(conversation) == (channel, thread)


def press(action_id: str, **message: Any) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U1"},
        "channel": {"id": "C1"},
        "message": {"ts": TS, **message},
        "actions": [{"action_id": action_id}],
    }


FEEDBACK: list[tuple[str, dict[str, Any], Feedback | None]] = [
    (
        "thumbs up in a thread",
        press("deskmate_feedback_up", thread_ts=THREAD),
        Feedback("slack", f"C1:{THREAD}", "U1", TS, "up"),
    ),
    (
        "thumbs down in a DM",
        press("deskmate_feedback_down"),
        Feedback("slack", "C1", "U1", TS, "down"),
    ),
    ("another app's button", press("approve"), None),
    ("no message", {**press("deskmate_feedback_up"), "message": {}}, None),
]


@pytest.mark.parametrize(("case", "body", "expected"), FEEDBACK, ids=[c[0] for c in FEEDBACK])
def test_to_feedback(case: str, body: dict[str, Any], expected: Feedback | None) -> None:
    feedback = to_feedback(body)
    if expected is None:
        assert feedback is None
    else:
        assert feedback is not None
        assert feedback == Feedback(
            expected.channel,
            expected.conversation_id,
            expected.user_id,
            expected.message_id,
            expected.rating,
            feedback.time,
        )


def test_plain_text_drops_only_our_own_mention() -> None:
    assert plain_text("<@UBOT>   hi <@UOTHER> <!here>", BOT) == "hi @UOTHER @here"


def test_deskmate_serve_names_the_missing_slack_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bots.cli import main

    for name in ("BOT_TOKEN", "APP_TOKEN", "SIGNING_SECRET"):
        monkeypatch.delenv(f"DESKMATE_SLACK_{name}", raising=False)
    monkeypatch.delenv("DESKMATE_CONFIG", raising=False)
    monkeypatch.setenv("DESKMATE_SLACK_SIGNING_SECRET", "secret")
    assert main(["serve"]) == 2
    assert "DESKMATE_SLACK_BOT_TOKEN is not set" in capsys.readouterr().err
    monkeypatch.delenv("DESKMATE_SLACK_SIGNING_SECRET")
    monkeypatch.setenv("DESKMATE_SLACK_BOT_TOKEN", "xoxb-1")
    assert main(["serve"]) == 2
    assert "DESKMATE_SLACK_SIGNING_SECRET" in capsys.readouterr().err


# Fuzz: any event Slack may deliver (or a forger signing with a leaked secret) becomes an
# Inbound that can be queued (UTF-8 encodable) or None; nothing raises.

_FIELD = st.none() | st.integers() | ANY_TEXT | st.lists(ANY_TEXT, max_size=2)


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["message", "app_mention", "reaction_added"]),
            "text": _FIELD | st.builds(lambda t: f"<@{BOT}> {t} <#C1|x> &amp; <@U9|", ANY_TEXT),
            "user": st.sampled_from(["U1", BOT, ""]) | _FIELD,
            "channel": st.sampled_from(["D1", "C1"]) | _FIELD,
            "ts": st.sampled_from([TS, "nan", "1e999", "x"]) | _FIELD,
        },
        optional={
            "channel_type": st.sampled_from(["im", "channel"]),
            "thread_ts": _FIELD,
            "subtype": _FIELD,
        },
    )
)
def test_fuzz_any_event_is_queueable_or_ignored(event: dict[str, Any]) -> None:
    inbound = to_inbound(event, BOT)
    if inbound is not None:
        inbound_to_json(inbound).encode("utf-8")  # what Redis needs
