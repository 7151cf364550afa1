"""Rendering replies for Slack: mrkdwn escaping, Block Kit, feedback, choice and quick-reply
buttons.
Pure, no I/O.

Model output is untrusted text: `&`, `<` and `>` are escaped so it can never ping
`<!channel>`, mention users or forge links. Links to the cited FAQ entries are the only
markup deskmate adds itself.
"""

from __future__ import annotations

import re
from typing import Any

from brain.types import Rating, Reply

Block = dict[str, Any]

PLACEHOLDER = "Looking that up…"
FEEDBACK_BLOCK = "deskmate_feedback"
FEEDBACK_ACTIONS = {"deskmate_feedback_up": "up", "deskmate_feedback_down": "down"}
FEEDBACK_ACTION_PATTERN = re.compile(r"^deskmate_feedback_(up|down)$")
CHOICE_BLOCK = "deskmate_choices"
CHOICE_ACTION_PATTERN = re.compile(r"^deskmate_pick_(\d{1,2})$")
QUICK_BLOCK = "deskmate_quick"
QUICK_ACTION_PATTERN = re.compile(r"^deskmate_say_(\d)$")
BUTTON_CHARS = 70  # Block Kit: a button's text holds at most 75 characters
SECTION_LIMIT = 3000  # Block Kit: a section's text holds at most 3,000 characters
MAX_SECTIONS = 40  # a message holds at most 50 blocks; leave room for sources and buttons
FALLBACK_LIMIT = 3000  # the notification text; the blocks carry the whole answer
HELD_BY_HUMAN = "A member of the support team has this conversation; they'll answer here."
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(text: str) -> str:
    """Model text as safe mrkdwn: escaped, and Markdown `**bold**` turned into `*bold*`."""
    return _BOLD.sub(r"*\1*", escape(text))


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Split at paragraph, line or word boundaries so every piece fits in `limit`."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = max(rest.rfind("\n\n", 0, limit), rest.rfind("\n", 0, limit))
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit
        # Never cut an escape such as "&amp;" in half.
        entity = rest.rfind("&", max(0, cut - 5), cut)
        if entity != -1 and ";" not in rest[entity:cut]:
            cut = entity or cut
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def feedback_buttons() -> Block:
    """The 👍 / 👎 buttons; their presses come back as block_actions."""
    return {
        "type": "actions",
        "block_id": FEEDBACK_BLOCK,
        "elements": [
            {
                "type": "button",
                "action_id": action_id,
                "value": rating,
                "text": {"type": "plain_text", "text": "👍" if rating == "up" else "👎"},
            }
            for action_id, rating in FEEDBACK_ACTIONS.items()
        ],
    }


def choice_buttons(reply: Reply) -> Block:
    """One button per option of a clarifying question; a press is the reply with its number."""
    elements = []
    for number, source in enumerate(reply.sources, start=1):
        title = source.title
        if len(title) > BUTTON_CHARS:
            title = title[: BUTTON_CHARS - 1] + "…"
        elements.append(
            {
                "type": "button",
                "action_id": f"deskmate_pick_{number}",
                "value": str(number),
                "text": {"type": "plain_text", "text": f"{number}. {title}"},
            }
        )
    return {"type": "actions", "block_id": CHOICE_BLOCK, "elements": elements}


def quick_reply_buttons(reply: Reply) -> Block:
    """One button per quick reply ("Back to the bot", 👍 / 👎); a press is the customer
    sending the button's text (its value)."""
    elements = [
        {
            "type": "button",
            "action_id": f"deskmate_say_{number}",
            "value": option.text,
            "text": {"type": "plain_text", "text": option.label[:BUTTON_CHARS], "emoji": True},
        }
        for number, option in enumerate(reply.quick_replies[:10])
    ]
    return {"type": "actions", "block_id": QUICK_BLOCK, "elements": elements}


def acknowledge_quick_reply(blocks: list[Block], label: str, user_id: str) -> list[Block]:
    """A message's blocks with its quick-reply buttons replaced by who pressed which."""
    kept = [block for block in blocks if block.get("block_id") != QUICK_BLOCK]
    return [*kept, _context(f"<@{escape(user_id)}>: {escape(label)}")]


def acknowledge_choice(blocks: list[Block], number: int, user_id: str) -> list[Block]:
    """The clarifying question's blocks with its buttons replaced by who picked what."""
    kept = [block for block in blocks if block.get("block_id") != CHOICE_BLOCK]
    return [*kept, _context(f"<@{escape(user_id)}> picked {number}.")]


def render_reply(reply: Reply) -> tuple[str, list[Block]]:
    """(notification text, blocks) for a reply: the answer, its sources, feedback buttons;
    a clarifying question with one button per option."""
    body = reply.text if reply.text else HELD_BY_HUMAN
    sections = split_text(to_mrkdwn(body))
    if len(sections) > MAX_SECTIONS:
        sections = [*sections[: MAX_SECTIONS - 1], sections[MAX_SECTIONS - 1][:2990] + " …"]
    blocks: list[Block] = []
    if reply.notice:
        blocks.append(_context(f"_{escape(reply.notice)}_"))
    blocks += [_section(text) for text in sections]
    if reply.action == "answer" and reply.sources:
        lines = []
        for number, source in enumerate(reply.sources, start=1):
            title = escape(source.title)
            lines.append(
                f"[{number}] <{escape(source.url)}|{title}>"
                if source.url
                else f"[{number}] {title}"
            )
        blocks.append(_context("\n".join(lines)))
    if reply.action == "answer":
        blocks.append(feedback_buttons())
    elif reply.action == "clarify" and reply.sources:
        blocks.append(choice_buttons(reply))
    if reply.quick_replies:
        blocks.append(quick_reply_buttons(reply))
    fallback = escape(body)
    if len(fallback) > FALLBACK_LIMIT:
        fallback = split_text(fallback, FALLBACK_LIMIT - 2)[0] + " …"
    return fallback, blocks


def acknowledge_feedback(blocks: list[Block], rating: Rating, user_id: str) -> list[Block]:
    """The rated message's blocks with the buttons replaced by a thank-you note."""
    kept = [block for block in blocks if block.get("block_id") != FEEDBACK_BLOCK]
    mark = "👍" if rating == "up" else "👎"
    return [*kept, _context(f"{mark} Thanks for the feedback, <@{escape(user_id)}>.")]


_ENTITY = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def plain_text(text: str, bot_user_id: str) -> str:
    """Slack message text as a person reads it: the bot's own mention removed, other
    mentions and links by their label, and `&amp;` `&lt;` `&gt;` unescaped."""

    def label(match: re.Match[str]) -> str:
        target, name = match[1], match[2]
        if target == f"@{bot_user_id}":
            return ""
        if target[0] in "@#":
            return target[0] + (name or target[1:])
        if target[0] == "!":  # <!here>, <!subteam^S123|@team>
            return name or "@" + target[1:].split("^")[0]
        return name or target

    text = _ENTITY.sub(label, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())
