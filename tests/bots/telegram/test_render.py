"""The Telegram renderer: escaping, splitting at the limit, citation links, buttons."""

from __future__ import annotations

import pytest

from bots.telegram.render import (
    OutgoingMessage,
    parse_choice,
    parse_feedback,
    plain_message,
    render_reply,
    split_text,
    utf16_len,
)
from brain.types import Reply, Source
from tests.fakes.telegram import visible_text

SOURCE = Source(
    "returns-window", "How long do I have to return an item?", 0.9, "https://x.example/r"
)
NO_URL = Source("gift-cards", "Gift cards & vouchers", 0.8)


@pytest.mark.parametrize(
    ("text", "expected_html"),
    [
        ("plain words", "plain words"),
        ("a < b > c", "a &lt; b &gt; c"),
        ("fish & chips", "fish &amp; chips"),
        ("<b>unbalanced", "&lt;b&gt;unbalanced"),
        ("</i> closing only", "&lt;/i&gt; closing only"),
        ('<a href="javascript:alert(1)">x</a>', '&lt;a href="javascript:alert(1)"&gt;x&lt;/a&gt;'),
        ("&amp; already escaped", "&amp;amp; already escaped"),
        ("emoji 🎉 and ünïcode", "emoji 🎉 and ünïcode"),
    ],
)
def test_model_text_is_escaped_never_markup(text: str, expected_html: str) -> None:
    [message] = render_reply(Reply(text, "clarify"))
    assert message.html == expected_html
    assert visible_text(message.html) == text  # Telegram shows exactly what the model wrote


@pytest.mark.parametrize(
    ("text", "limit", "chunks"),
    [
        ("short", 10, ["short"]),
        ("one two three four", 9, ["one two", "three", "four"]),
        ("First para.\n\nSecond para.", 20, ["First para.", "Second para."]),
        ("Line number one\nline two", 20, ["Line number one", "line two"]),
        ("One. Two is here. Three.", 18, ["One. Two is here.", "Three."]),
        ('He said "stop." Then left.', 17, ['He said "stop."', "Then left."]),
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),  # no boundary at all: cut hard
        ("🎉🎉🎉🎉", 4, ["🎉🎉", "🎉🎉"]),  # emoji count as two UTF-16 units
        ("  padded  ", 10, ["padded"]),
        ("", 10, []),
    ],
)
def test_split_text(text: str, limit: int, chunks: list[str]) -> None:
    assert split_text(text, limit) == chunks
    assert all(utf16_len(chunk) <= limit for chunk in chunks)


def test_split_prefers_paragraphs_over_later_sentences() -> None:
    text = "A" * 30 + ".\n\n" + "B sentence. " * 5
    first, *_ = split_text(text, 60)
    assert first == "A" * 30 + "."


def test_long_answer_parts_fit_and_only_the_last_has_buttons_and_sources() -> None:
    text = "\n\n".join(f"Paragraph {n}. " + "Words here. " * 60 for n in range(12))
    messages = render_reply(Reply(text + " [1]", "answer", sources=(SOURCE,)))
    assert len(messages) >= 2
    assert all(utf16_len(visible_text(m.html)) <= 4096 for m in messages)
    assert [m.reply_markup is not None for m in messages] == [False] * (len(messages) - 1) + [True]
    assert "Sources:" in messages[-1].html and all("Sources:" not in m.html for m in messages[:-1])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            Reply("Yes, 30 days [1].", "answer", sources=(SOURCE,)),
            'Yes, 30 days <a href="https://x.example/r">[1]</a>.\n\n<b>Sources:</b>\n'
            '[1] <a href="https://x.example/r">How long do I have to return an item?</a>',
        ),
        (
            Reply("See [1] and [2] and [3].", "answer", sources=(NO_URL, SOURCE)),
            'See [1] and <a href="https://x.example/r">[2]</a> and [3].\n\n<b>Sources:</b>\n'
            "[1] Gift cards &amp; vouchers\n"
            '[2] <a href="https://x.example/r">How long do I have to return an item?</a>',
        ),
        (
            Reply("Did you mean:\n1. [1] thing", "clarify", sources=(SOURCE,)),
            "Did you mean:\n1. [1] thing",  # options are listed in the text, not as sources
        ),
        (
            Reply("Hi!", "none", notice="Your message is long; I read the first 4,000."),
            "<i>Your message is long; I read the first 4,000.</i>\n\nHi!",
        ),
    ],
)
def test_citations_sources_and_notices(reply: Reply, expected: str) -> None:
    [message] = render_reply(reply)
    assert message.html == expected
    visible_text(message.html)  # well-formed for Telegram's parser


def test_unsafe_source_urls_are_not_linked() -> None:
    bad = Source("x", "X", 0.9, 'javascript:alert("x")')
    [message] = render_reply(Reply("See [1].", "answer", sources=(bad,)))
    assert "href" not in message.html


def test_buttons_only_under_answers_and_nothing_for_silence() -> None:
    [answer] = render_reply(Reply("Yes [1]", "answer", sources=(SOURCE,)))
    assert answer.reply_markup is not None
    assert answer.reply_markup.to_dict() == {
        "inline_keyboard": [
            [{"text": "👍", "callback_data": "fb:up"}, {"text": "👎", "callback_data": "fb:down"}]
        ]
    }
    for action in ("clarify", "handoff", "none"):
        [message] = render_reply(Reply("text", action))  # type: ignore[arg-type]
        assert message.reply_markup is None
    assert render_reply(Reply("", "none")) == []


@pytest.mark.parametrize(
    ("data", "rating"),
    [("fb:up", "up"), ("fb:down", "down"), ("fb:sideways", None), ("other", None), (None, None)],
)
def test_parse_feedback(data: str | None, rating: str | None) -> None:
    assert parse_feedback(data) == rating


def test_plain_message_escapes() -> None:
    assert plain_message("1 < 2 & 3") == OutgoingMessage("1 &lt; 2 &amp; 3")


def test_a_clarifying_question_has_one_button_per_option() -> None:
    long_title = Source("long", "x" * 80, 0.5)
    [message] = render_reply(
        Reply("Did you mean:\n1. ...\n2. ...", "clarify", sources=(SOURCE, long_title))
    )
    assert message.reply_markup is not None
    assert message.reply_markup.to_dict() == {
        "inline_keyboard": [
            [{"text": f"1. {SOURCE.title}", "callback_data": "pick:1"}],
            [{"text": "2. " + "x" * 59 + "…", "callback_data": "pick:2"}],
        ]
    }


@pytest.mark.parametrize(
    ("data", "number"),
    [("pick:2", 2), ("pick:0", None), ("pick:x", None), ("fb:up", None), (None, None)],
)
def test_parse_choice(data: str | None, number: int | None) -> None:
    assert parse_choice(data) == number
