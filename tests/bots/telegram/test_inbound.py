"""`to_inbound` / `to_feedback`: Telegram updates (as JSON) to brain types."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from telegram import Update

from bots.telegram.adapter import (
    conversation_key,
    parse_conversation_key,
    to_feedback,
    to_inbound,
)
from brain.flow.stream import inbound_to_json
from brain.types import Feedback, Inbound
from tests.fakes.telegram import (
    BOT_USER,
    CUSTOMER,
    GROUP,
    button_press,
    group_message,
    sticker_message,
    text_message,
)
from tests.hostile import ANY_TEXT, FUZZ


def inbound_of(update: dict[str, Any] | Update) -> Inbound | None:
    return to_inbound(update, bot_id=BOT_USER["id"], bot_username=BOT_USER["username"])


CUSTOMER_CHAT = {"id": CUSTOMER["id"], "first_name": CUSTOMER["first_name"], "type": "private"}
OTHER_BOT = {"id": 999, "is_bot": True, "first_name": "Other", "username": "other_bot"}
BOT_MESSAGE = {
    "message_id": 77,
    "from": BOT_USER,
    "chat": GROUP,
    "date": 1700000000,
    "text": "Earlier answer",
}


def with_message(update: dict[str, Any], **fields: Any) -> dict[str, Any]:
    update["message"].update(fields)
    return update


def without_text(update: dict[str, Any], **fields: Any) -> dict[str, Any]:
    del update["message"]["text"]
    return with_message(update, **fields)


# (case, update, expected (conversation, text, is_group, mentioned, attachment) or None)
CASES: list[tuple[str, dict[str, Any], tuple[str, str, bool, bool, str] | None]] = [
    (
        "private text",
        text_message("where is my order?"),
        ("42", "where is my order?", False, True, ""),
    ),
    ("private command", text_message("/help"), ("42", "/help", False, True, "")),
    ("group, not addressed", group_message("where is my order?"), None),
    (
        "group mention is removed from the text",
        group_message("@northwind_help_bot where is my order?"),
        (str(GROUP["id"]), "where is my order?", True, True, ""),
    ),
    (
        "group mention in any case, mid-sentence",
        group_message("hey @Northwind_Help_Bot, where is my order?"),
        (str(GROUP["id"]), "hey , where is my order?", True, True, ""),
    ),
    ("group mention of another bot", group_message("@other_bot where is my order?"), None),
    (
        "group reply to the bot",
        group_message("and returns?", reply_to_message=BOT_MESSAGE),
        (str(GROUP["id"]), "and returns?", True, True, ""),
    ),
    (
        "group reply to someone else",
        group_message("and returns?", reply_to_message={**BOT_MESSAGE, "from": CUSTOMER}),
        None,
    ),
    ("group bare command", group_message("/help"), (str(GROUP["id"]), "/help", True, True, "")),
    (
        "group command for us",
        group_message("/help@northwind_help_bot"),
        (str(GROUP["id"]), "/help", True, True, ""),
    ),
    ("group command for another bot", group_message("/help@other_bot"), None),
    (
        "group text mention of the bot (no username link)",
        with_message(
            group_message("Help me please"),
            entities=[{"type": "text_mention", "offset": 0, "length": 4, "user": BOT_USER}],
        ),
        (str(GROUP["id"]), "Help me please", True, True, ""),
    ),
    (
        "forum topic: conversation per topic; the topic opener is no reply",
        group_message(
            "@northwind_help_bot hi",
            message_thread_id=12,
            is_topic_message=True,
            reply_to_message={
                **BOT_MESSAGE,
                "message_id": 12,
                "forum_topic_created": {"name": "Orders", "icon_color": 7322096},
            },
        ),
        (f"{GROUP['id']}:12", "hi", True, True, ""),
    ),
    (
        "forum topic without mention",
        group_message(
            "hi",
            message_thread_id=12,
            is_topic_message=True,
            reply_to_message={
                **BOT_MESSAGE,
                "message_id": 12,
                "forum_topic_created": {"name": "Orders", "icon_color": 7322096},
            },
        ),
        None,
    ),
    ("sticker", sticker_message(), ("42", "", False, True, "sticker")),
    (
        "photo with caption",
        without_text(
            text_message(""),
            caption="is this the right size?",
            photo=[{"file_id": "p", "file_unique_id": "u", "width": 90, "height": 90}],
        ),
        ("42", "is this the right size?", False, True, "photo"),
    ),
    (
        "voice",
        without_text(
            text_message(""), voice={"file_id": "v", "file_unique_id": "u", "duration": 3}
        ),
        ("42", "", False, True, "voice message"),
    ),
    (
        "animation is a GIF, not a file",
        without_text(
            text_message(""),
            animation={
                "file_id": "a",
                "file_unique_id": "u",
                "width": 1,
                "height": 1,
                "duration": 1,
            },
            document={"file_id": "a", "file_unique_id": "u"},
        ),
        ("42", "", False, True, "GIF"),
    ),
    (
        "document",
        without_text(text_message(""), document={"file_id": "d", "file_unique_id": "u"}),
        ("42", "", False, True, "file"),
    ),
    ("message from a bot", text_message("hi", sender=OTHER_BOT), None),
    ("edited message", {"edited_message": text_message("fixed typo")["message"]}, None),
    (
        "channel post",
        {
            "channel_post": {
                "message_id": 1,
                "chat": {"id": -100777, "type": "channel", "title": "News"},
                "date": 1700000000,
                "text": "news",
            }
        },
        None,
    ),
    (
        "someone joins the group",
        without_text(group_message(""), new_chat_members=[CUSTOMER]),
        None,
    ),
    ("a button press is no message", button_press(BOT_MESSAGE, "fb:up"), None),
]


@pytest.mark.parametrize(("case", "update", "expected"), CASES, ids=[c[0] for c in CASES])
def test_to_inbound(
    case: str, update: dict[str, Any], expected: tuple[str, str, bool, bool, str] | None
) -> None:
    update = {"update_id": 1, **update}
    inbound = inbound_of(update)
    addressed = inbound if inbound is not None and inbound.mentioned else None
    if expected is None:
        assert addressed is None
        return
    assert addressed is not None
    assert (
        addressed.conversation_id,
        addressed.text,
        addressed.is_group,
        addressed.mentioned,
        addressed.attachment,
    ) == expected
    assert addressed.channel == "telegram"
    assert addressed.user_id == str(update["message"]["from"]["id"])
    assert addressed.message_id == str(update["message"]["message_id"])
    assert addressed.time == update["message"]["date"]


def test_group_messages_not_addressed_come_back_flagged() -> None:
    inbound = inbound_of({"update_id": 1, **group_message("hello all")})
    assert inbound is not None and inbound.is_group and not inbound.mentioned


def test_update_objects_and_json_translate_the_same() -> None:
    data = {"update_id": 5, **text_message("where is my order?")}
    from_json = inbound_of(data)
    from_object = inbound_of(Update.de_json(data, None))
    assert from_json == from_object


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        (
            button_press(BOT_MESSAGE, "fb:down"),
            Feedback("telegram", str(GROUP["id"]), "42", "77", "down"),
        ),
        (
            button_press(
                {**BOT_MESSAGE, "message_thread_id": 12, "is_topic_message": True}, "fb:up"
            ),
            Feedback("telegram", f"{GROUP['id']}:12", "42", "77", "up"),
        ),
        # Too old to be shown (an inaccessible message): still recorded.
        (
            button_press({"message_id": 77, "chat": GROUP, "date": 0}, "fb:up"),
            Feedback("telegram", str(GROUP["id"]), "42", "77", "up"),
        ),
        (button_press(BOT_MESSAGE, "something-else"), None),
        (text_message("hi"), None),
    ],
)
def test_to_feedback(update: dict[str, Any], expected: Feedback | None) -> None:
    feedback = to_feedback({"update_id": 1, **update})
    if expected is None:
        assert feedback is None
        return
    assert feedback is not None
    # `time` is when the press arrived; compare the rest.
    assert (feedback.channel, feedback.conversation_id, feedback.user_id) == (
        expected.channel,
        expected.conversation_id,
        expected.user_id,
    )
    assert (feedback.message_id, feedback.rating) == (expected.message_id, expected.rating)


@pytest.mark.parametrize(("chat", "thread"), [(42, None), (-1001234567890, None), (-100123, 7)])
def test_conversation_keys_round_trip(chat: int, thread: int | None) -> None:
    assert parse_conversation_key(conversation_key(chat, thread)) == (chat, thread)


# Fuzz: any text, entities and chat a Telegram message may carry becomes an Inbound that
# can be queued (UTF-8 encodable, lone surrogates replaced) or None; nothing raises.

_ENTITY = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["mention", "bot_command", "text_mention", "bold", "url"]),
        "offset": st.integers(min_value=-5, max_value=300),
        "length": st.integers(min_value=0, max_value=300),
    },
    optional={"user": st.just(BOT_USER)},
)
_MESSAGES = st.fixed_dictionaries(
    {
        "text": ANY_TEXT | st.builds(lambda t: f"@{BOT_USER['username']} {t}", ANY_TEXT),
        "chat": st.sampled_from([CUSTOMER_CHAT, GROUP, {"id": -1007, "type": "channel"}]),
    },
    optional={
        "entities": st.lists(_ENTITY, max_size=4),
        "message_thread_id": st.integers(min_value=1, max_value=10**6),
        "is_topic_message": st.booleans(),
        "caption": ANY_TEXT,
    },
)


@FUZZ
@given(_MESSAGES)
def test_fuzz_any_message_is_queueable_or_ignored(fields: dict[str, Any]) -> None:
    text = fields.pop("text")
    inbound = inbound_of({"update_id": 1, **text_message(text, **fields)})
    if inbound is not None:
        inbound_to_json(inbound).encode("utf-8")  # what Redis needs
