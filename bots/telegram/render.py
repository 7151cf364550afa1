"""Rendering a `Reply` as Telegram messages. Pure: no I/O, no bot, table-tested.

Model output is text, never markup: it is HTML-escaped and only the renderer adds tags
(citation links, the italic notice). Telegram's limit of 4096 characters counts the text
after entity parsing in UTF-16 code units, so lengths here are measured on the visible
text the same way, and long answers are split on paragraph, line, then sentence
boundaries. Answers carry 👍/👎 buttons; their callback data says only the rating, since
every press arrives with the message it was pressed on. A clarifying question carries one
button per option; pressing one is the same as replying with its number.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Final

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from brain.types import QuickReply, Rating, Reply, Source

MESSAGE_LIMIT: Final = 4096
FEEDBACK_PREFIX: Final = "fb:"
CHOICE_PREFIX: Final = "pick:"
SAY_PREFIX: Final = "say:"  # quick replies: the button sends this text as the customer's
BUTTON_CHARS: Final = 60  # longer option titles are cut on their button
RATINGS: Final[dict[Rating, str]] = {"up": "👍", "down": "👎"}

_CITATION = re.compile(r"\[(\d{1,2})\]")
# Where a chunk may end, best first; each pattern matches the separator to cut after.
_BOUNDARIES = (
    re.compile(r"\n\s*\n"),  # paragraph
    re.compile(r"\n"),  # line
    re.compile(r"(?<=[.!?…])[\"')\]]*\s+"),  # sentence
    re.compile(r"\s+"),  # word
)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One sendMessage call: HTML text and optional inline keyboard."""

    html: str
    reply_markup: InlineKeyboardMarkup | None = None


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units: most emoji count 2)."""
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-16 code units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split plain text into chunks of at most `limit` (UTF-16 units), preferring paragraph,
    then line, sentence and word boundaries in the second half of each chunk."""
    chunks: list[str] = []
    rest = text.strip()
    while utf16_len(rest) > limit:
        cut = _best_cut(rest, _prefix_within(rest, limit))
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def _best_cut(rest: str, size: int) -> int:
    """Where to end a chunk of `rest` that may hold at most `size` characters."""
    probe = rest[: size + 1]  # a separator right after the window is a clean cut too
    for boundary in _BOUNDARIES:
        cuts = [min(m.end(), size) for m in boundary.finditer(probe) if m.start() > 0]
        good = [cut for cut in cuts if cut >= size // 2]
        if good:
            return max(good)
    return size  # one enormous word: cut it


def _link(url: str | None) -> str | None:
    if url and url.startswith(("https://", "http://")):
        return html.escape(url, quote=True)
    return None


def _with_citation_links(escaped: str, sources: tuple[Source, ...]) -> str:
    def link(match: re.Match[str]) -> str:
        number = int(match[1])
        if 1 <= number <= len(sources):
            href = _link(sources[number - 1].url)
            if href:
                return f'<a href="{href}">{match[0]}</a>'
        return match[0]

    return _CITATION.sub(link, escaped)


def _sources_block(sources: tuple[Source, ...]) -> tuple[str, str]:
    """(plain, html) of the numbered source list under an answer."""
    plain = ["Sources:"]
    marked = ["<b>Sources:</b>"]
    for number, source in enumerate(sources, start=1):
        plain.append(f"[{number}] {source.title}")
        href = _link(source.url)
        title = html.escape(source.title)
        marked.append(f'[{number}] <a href="{href}">{title}</a>' if href else f"[{number}] {title}")
    return "\n".join(plain), "\n".join(marked)


def plain_message(text: str) -> OutgoingMessage:
    """A message of plain text, escaped for HTML parse mode."""
    return OutgoingMessage(html.escape(text, quote=False))


def feedback_keyboard() -> InlineKeyboardMarkup:
    """The 👍/👎 row under an answer."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(emoji, callback_data=FEEDBACK_PREFIX + rating)
                for rating, emoji in RATINGS.items()
            ]
        ]
    )


def parse_feedback(data: str | None) -> Rating | None:
    """The rating in a button's callback data, or None if it is not one of ours."""
    if data == FEEDBACK_PREFIX + "up":
        return "up"
    if data == FEEDBACK_PREFIX + "down":
        return "down"
    return None


def choice_keyboard(options: tuple[Source, ...]) -> InlineKeyboardMarkup:
    """One button per option of a clarifying question, numbered as in its text."""
    rows = []
    for number, source in enumerate(options, start=1):
        title = (
            source.title
            if len(source.title) <= BUTTON_CHARS
            else source.title[: BUTTON_CHARS - 1] + "…"
        )
        rows.append(
            [InlineKeyboardButton(f"{number}. {title}", callback_data=f"{CHOICE_PREFIX}{number}")]
        )
    return InlineKeyboardMarkup(rows)


def parse_choice(data: str | None) -> int | None:
    """The option number in a clarifying button's callback data, or None if not ours."""
    if not data or not data.startswith(CHOICE_PREFIX):
        return None
    number = data.removeprefix(CHOICE_PREFIX)
    return int(number) if number.isdigit() and 0 < int(number) < 100 else None


def render_reply(reply: Reply, limit: int = MESSAGE_LIMIT) -> list[OutgoingMessage]:
    """The messages that deliver `reply`: none for a silent reply, else one or more HTML
    messages within `limit`, the last of an answer carrying the feedback buttons and the
    last of a clarifying question one button per option."""
    sources = reply.sources if reply.action == "answer" else ()
    # (plain, html) per message; the plain text is what Telegram counts against the limit.
    messages = [
        (chunk, _with_citation_links(html.escape(chunk, quote=False), sources))
        for chunk in split_text(reply.text, limit)
    ]
    if not messages:
        return []
    if reply.notice:
        notice = (reply.notice, f"<i>{html.escape(reply.notice, quote=False)}</i>")
        messages[0:1] = _join_or_keep(notice, messages[0], limit)
    if sources:
        messages[-1:] = _join_or_keep(messages[-1], _sources_block(sources), limit)
    out = [OutgoingMessage(marked) for _, marked in messages]
    if reply.action == "answer":
        out[-1] = OutgoingMessage(out[-1].html, feedback_keyboard())
    elif reply.action == "clarify" and reply.sources:
        out[-1] = OutgoingMessage(out[-1].html, choice_keyboard(reply.sources))
    elif reply.quick_replies:
        out[-1] = OutgoingMessage(out[-1].html, quick_reply_keyboard(reply.quick_replies))
    return out


def quick_reply_keyboard(options: tuple[QuickReply, ...]) -> InlineKeyboardMarkup:
    """One row of buttons; a press is the customer sending the button's text."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(option.label, callback_data=SAY_PREFIX + option.text[:60])
                for option in options
            ]
        ]
    )


def parse_say(data: str | None) -> str | None:
    """The text a quick-reply button sends, or None if the data is not one of ours."""
    if not data or not data.startswith(SAY_PREFIX):
        return None
    return data.removeprefix(SAY_PREFIX) or None


def _join_or_keep(
    first: tuple[str, str], second: tuple[str, str], limit: int
) -> list[tuple[str, str]]:
    """One message of both, a blank line apart, if it fits; else two."""
    if utf16_len(first[0]) + 2 + utf16_len(second[0]) <= limit:
        return [(f"{first[0]}\n\n{second[0]}", f"{first[1]}\n\n{second[1]}")]
    return [first, second]
