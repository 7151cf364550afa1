"""Rendering replies for Slack: escaping, Block Kit layout, limits. Pure, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from bots.slack.render import (
    FEEDBACK_BLOCK,
    QUICK_ACTION_PATTERN,
    QUICK_BLOCK,
    SECTION_LIMIT,
    acknowledge_choice,
    acknowledge_feedback,
    acknowledge_quick_reply,
    escape,
    render_reply,
    split_text,
    to_mrkdwn,
)
from brain.types import QuickReply, Reply, Source

ESCAPES = [
    ("plain", "Returns take 30 days.", "Returns take 30 days."),
    ("ampersand", "Terms & conditions", "Terms &amp; conditions"),
    ("broadcast ping", "<!channel> attention", "&lt;!channel&gt; attention"),
    ("fake user mention", "ask <@U123>", "ask &lt;@U123&gt;"),
    ("forged link", "<https://evil.example|your bank>", "&lt;https://evil.example|your bank&gt;"),
    ("already escaped text stays literal", "&amp;", "&amp;amp;"),
]


@pytest.mark.parametrize(("case", "text", "expected"), ESCAPES, ids=[c[0] for c in ESCAPES])
def test_escape(case: str, text: str, expected: str) -> None:
    assert escape(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("**Free** returns", "*Free* returns"),
        ("2 ** 3", "2 ** 3"),
        ("a < b **and** c", "a &lt; b *and* c"),
    ],
)
def test_to_mrkdwn(text: str, expected: str) -> None:
    assert to_mrkdwn(text) == expected


def blocks_of(reply: Reply, kind: str) -> list[dict[str, Any]]:
    return [b for b in render_reply(reply)[1] if b["type"] == kind]


SOURCES = (
    Source("returns-window", "How long do I have to return an item?", 0.91, "https://h.example/r"),
    Source("size <guide>", "Sizes & fit", 0.7, None),
)


def test_answer_has_text_sources_and_buttons() -> None:
    reply = Reply("You have **30 days** <to> return it [1]", "answer", sources=SOURCES)
    fallback, blocks = render_reply(reply)
    assert [b["type"] for b in blocks] == ["section", "context", "actions"]
    assert fallback == "You have **30 days** &lt;to&gt; return it [1]"
    assert blocks[0]["text"] == {
        "type": "mrkdwn",
        "text": "You have *30 days* &lt;to&gt; return it [1]",
    }
    assert blocks[1]["elements"][0]["text"] == (
        "[1] <https://h.example/r|How long do I have to return an item?>\n[2] Sizes &amp; fit"
    )
    assert blocks[2]["block_id"] == FEEDBACK_BLOCK
    assert [(e["action_id"], e["value"], e["text"]["text"]) for e in blocks[2]["elements"]] == [
        ("deskmate_feedback_up", "up", "👍"),
        ("deskmate_feedback_down", "down", "👎"),
    ]


@pytest.mark.parametrize(
    ("reply", "kinds"),
    [
        (Reply("Did you mean:\n1. A\n2. B", "clarify", sources=SOURCES), ["section", "actions"]),
        (Reply("Passing you to a person.", "handoff"), ["section"]),
        (Reply("Hi! What can I help you with?", "none"), ["section"]),
        (
            Reply("Answer [1]", "answer", notice="I read the first 4,000 characters."),
            ["context", "section", "actions"],
        ),
    ],
)
def test_layout_by_action(reply: Reply, kinds: list[str]) -> None:
    assert [b["type"] for b in render_reply(reply)[1]] == kinds


def test_long_answers_are_split_into_sections_within_the_limit() -> None:
    text = ("Lorem ipsum dolor sit amet & more. " * 40 + "\n\n") * 10
    fallback, blocks = render_reply(Reply(text, "answer"))
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert len(sections) > 1
    assert all(len(s) <= SECTION_LIMIT for s in sections)
    assert " ".join(sections).split() == escape(text).split()  # nothing lost
    assert len(fallback) <= SECTION_LIMIT


def test_split_never_cuts_an_escape_in_half() -> None:
    text = "x" * 2998 + "&amp;" + "y" * 10
    pieces = split_text(text, 3000)
    assert pieces == ["x" * 2998, "&amp;" + "y" * 10]


def test_acknowledged_feedback_replaces_the_buttons() -> None:
    _, blocks = render_reply(Reply("Answer [1]", "answer", sources=SOURCES))
    acknowledged = acknowledge_feedback(blocks, "down", "U1")
    assert [b["type"] for b in acknowledged] == ["section", "context", "context"]
    assert acknowledged[-1]["elements"][0]["text"] == "👎 Thanks for the feedback, <@U1>."


def test_a_clarifying_question_has_one_button_per_option_and_a_pick_replaces_them() -> None:
    options = (
        Source("a", "Where is my order?", 0.5),
        Source("b", "y" * 90, 0.4),
    )
    _, blocks = render_reply(Reply("Did you mean one of these?", "clarify", sources=options))
    [buttons] = [b for b in blocks if b.get("block_id") == "deskmate_choices"]
    assert [(e["action_id"], e["value"], e["text"]["text"]) for e in buttons["elements"]] == [
        ("deskmate_pick_1", "1", "1. Where is my order?"),
        ("deskmate_pick_2", "2", "2. " + "y" * 69 + "…"),
    ]
    picked = acknowledge_choice(blocks, 2, "U1")
    assert not [b for b in picked if b["type"] == "actions"]
    assert picked[-1]["elements"][0]["text"] == "<@U1> picked 2."


def test_quick_replies_are_buttons_that_send_their_text_and_go_once_pressed() -> None:
    reply = Reply(
        "Resolved. How did our team do?",
        "none",
        quick_replies=(QuickReply("👍", "👍"), QuickReply("Back to the bot", "/bot")),
    )
    _, blocks = render_reply(reply)
    [buttons] = [b for b in blocks if b.get("block_id") == QUICK_BLOCK]
    assert [(e["action_id"], e["value"], e["text"]["text"]) for e in buttons["elements"]] == [
        ("deskmate_say_0", "👍", "👍"),
        ("deskmate_say_1", "/bot", "Back to the bot"),
    ]
    assert all(QUICK_ACTION_PATTERN.match(e["action_id"]) for e in buttons["elements"])
    after = acknowledge_quick_reply(blocks, "<Back>", "U7")
    assert not [b for b in after if b.get("block_id") == QUICK_BLOCK]
    assert after[-1]["elements"][0]["text"] == "<@U7>: &lt;Back&gt;"
    assert QUICK_BLOCK not in str(render_reply(Reply("An answer.", "answer"))[1])
