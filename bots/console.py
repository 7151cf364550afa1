"""The console channel: chat with the brain in a terminal (or through pipes, in tests).

It is a real channel, not a test double: `deskmate chat` runs it, and tests drive it with
string streams exactly as a person would type.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TextIO

from brain.pipeline import Brain
from brain.redis_server import RedisUnavailable
from brain.types import Inbound, Reply

log = logging.getLogger(__name__)
QUIT = {"/quit", "/exit", ":q"}


def render(reply: Reply, staff_reachable: bool = True) -> str:
    """Plain-text rendering: the answer, then the cited entries numbered as in the text.
    A conversation held for a person says whether one can answer here."""
    if reply.action == "none" and not reply.text:
        if staff_reachable:
            held = "A member of the support team has this conversation. /reset returns you to me."
        else:
            held = (
                "This conversation waits for a person, and no one from the support team is "
                "connected to this chat. Type bot to come back to me."
            )
        lines = [f"({held})"]
    else:
        lines = [reply.text]
        if reply.action == "answer" and reply.sources:
            lines.append("")
            for number, source in enumerate(reply.sources, start=1):
                link = f" <{source.url}>" if source.url else ""
                lines.append(f"  [{number}] {source.title}{link}")
    if reply.notice:
        lines.insert(0, f"(note: {reply.notice})")
    return "\n".join(lines)


async def run_console(
    brain: Brain,
    stdin: TextIO,
    stdout: TextIO,
    *,
    user_id: str = "console-user",
    conversation_id: str = "console:local",
    prompt: bool = True,
    retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0),
) -> None:
    """Read lines until EOF or /quit; answer each one. Errors never end the session."""
    answering = getattr(brain.backend, "version", "")
    with_what = f" (answering with {answering})" if answering else ""
    stdout.write(
        f"Chatting with {brain.bot_name}{with_what}. Type /help for commands, /quit to leave.\n"
    )
    # Message ids are unique across sessions of the same conversation: the history keeps
    # a message's turns once, by its id.
    session = f"{time.time_ns() // 1_000_000:x}"
    for number in itertools.count(1):
        if prompt:
            stdout.write("you> ")
        stdout.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            break
        if line.strip() in QUIT:
            break
        inbound = Inbound(
            channel="console",
            conversation_id=conversation_id,
            user_id=user_id,
            message_id=f"{session}-{number}",
            text=line.rstrip("\n"),
        )
        reply = await _handle_with_retry(brain, inbound, stdout, retry_delays)
        if reply is not None:
            stdout.write(f"{brain.bot_name}> {render(reply, brain.staff_reachable)}\n")
    stdout.write("Bye!\n")
    stdout.flush()


async def _handle_with_retry(
    brain: Brain, inbound: Inbound, stdout: TextIO, retry_delays: tuple[float, ...]
) -> Reply | None:
    for delay in (*retry_delays, None):
        try:
            return await brain.handle(inbound)
        except RedisUnavailable as exc:
            log.warning("conversation %s: %s", inbound.conversation_id, exc)
            if delay is None:
                stdout.write(
                    f"! {exc}\n! Your message was not answered; send it again once Redis is back.\n"
                )
                return None
            stdout.write(f"! Conversation store unavailable, retrying in {delay:g}s...\n")
            stdout.flush()
            await asyncio.sleep(delay)
        except Exception:
            # One error boundary per message: log it, apologise, keep the session.
            log.exception("conversation %s: failed to answer", inbound.conversation_id)
            stdout.write("! Sorry, something went wrong answering that. Please try again.\n")
            return None
    return None
