"""Importers for platform export files into the training conversation shape.

Slack workspace export (a zip of `users.json`, `channels.json` and `<channel>/<date>.json`
message lists): one conversation per thread, and one per top-level message without
replies. The thread's starter (and anyone posting as them) is the customer (`user`); bot
messages are the bot (`assistant`); everyone else in the thread is staff (`agent`).
👍/👎 reactions on a bot message become its rating.

Telegram Desktop export (`result.json`, one chat or a whole account): a chat with a bot
(`bot_chat`) has the bot as `assistant`; in a personal chat the exporting staff member is
the `agent` and the other person the customer; in groups the senders named in `staff` are
agents. A chat is split into conversations at silences longer than `gap_hours`.

Labelled queries (the `deskmate eval` format with `history` and a reference `answer`): one
conversation per query, ending in the reference as the `agent` reply; a stable share of
the dialogues can be held out for evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from retrieval.evaluation import LabelledQuery, load_queries
from training.transcripts import Conversation, Message, TranscriptFormatError

Importer = Callable[..., list[Conversation]]
THUMBS_UP = {"+1", "thumbsup", "thumbs_up"}
THUMBS_DOWN = {"-1", "thumbsdown", "thumbs_down"}


def _load_json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TranscriptFormatError(f"{where}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise TranscriptFormatError(f"{where}: not valid JSON (nested too deeply)") from None


def _reported(kind: str) -> Callable[[Importer], Importer]:
    """An importer whose every failure on a malformed file (a field of the wrong type, a
    missing key) is a `TranscriptFormatError` naming the file, never a traceback."""

    def decorate(importer: Importer) -> Importer:
        @functools.wraps(importer)
        def read(path: Path, *args: Any, **kwargs: Any) -> list[Conversation]:
            try:
                return importer(path, *args, **kwargs)
            except TranscriptFormatError:
                raise
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
                raise TranscriptFormatError(
                    f"{path}: not a {kind} ({type(exc).__name__}: {exc})"
                ) from None

        return read

    return decorate


@_reported("Slack export")
def import_slack(path: Path) -> list[Conversation]:
    """Conversations from a Slack workspace export zip."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise TranscriptFormatError(f"{path}: not a Slack export zip ({exc})") from exc
    with archive:
        names = set(archive.namelist())
        users: dict[str, str] = {}
        if "users.json" in names:
            for user in _load_json(archive.read("users.json"), f"{path}:users.json"):
                profile = user.get("profile") or {}
                users[user["id"]] = (
                    profile.get("real_name") or user.get("real_name") or user.get("name") or ""
                )
        messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for name in sorted(names):
            parts = name.split("/")
            if len(parts) != 2 or not parts[1].endswith(".json"):
                continue
            listing = _load_json(archive.read(name), f"{path}:{name}")
            if not isinstance(listing, list):
                raise TranscriptFormatError(f"{path}:{name}: expected a list of messages")
            messages[parts[0]].extend(m for m in listing if isinstance(m, dict))
    conversations = []
    for channel, listing in messages.items():
        conversations.extend(_slack_threads(channel, listing, users))
    conversations.sort(key=lambda c: c.messages[0].time)
    return conversations


def _is_slack_bot(message: dict[str, Any]) -> bool:
    return bool(message.get("bot_id")) or message.get("subtype") == "bot_message"


def _slack_threads(
    channel: str, listing: list[dict[str, Any]], users: dict[str, str]
) -> list[Conversation]:
    threads: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in listing:
        if message.get("type") != "message" or not message.get("ts"):
            continue
        if message.get("subtype") not in (None, "bot_message", "thread_broadcast"):
            continue  # joins, topic changes, file comments...
        threads[str(message.get("thread_ts") or message["ts"])].append(message)
    conversations = []
    for root_ts, thread in threads.items():
        thread.sort(key=lambda m: float(m["ts"]))
        starter = thread[0].get("user", "")
        out = []
        for message in thread:
            text = str(message.get("text") or "").strip()
            if not text:
                continue
            if _is_slack_bot(message):
                role = "assistant"
            elif message.get("user", "") == starter:
                role = "user"
            else:
                role = "agent"
            rating = ""
            for reaction in message.get("reactions") or []:
                if reaction.get("name") in THUMBS_DOWN:
                    rating = "down"  # a single 👎 outweighs 👍: never learn a disputed answer
                elif reaction.get("name") in THUMBS_UP and rating != "down":
                    rating = "up"
            out.append(
                Message(
                    role=role,
                    content=text,
                    time=float(message["ts"]),
                    message_id=str(message["ts"]),
                    user=str(message.get("user") or message.get("bot_id") or ""),
                    rating=rating if role == "assistant" else "",
                )
            )
        if out:
            names = sorted({users[m.user] for m in out if users.get(m.user)})
            meta = {"id": f"slack:{channel}:{root_ts}", "channel": "slack", "source": "slack"}
            conversations.append(Conversation(out, {**meta, "names": names}).finish_meta())
    return conversations


def _telegram_text(value: Any) -> str:
    """Telegram exports hold text as a string or a list of strings and entity objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in value)
    return ""


@_reported("Telegram Desktop export")
def import_telegram(
    path: Path, staff: Collection[str] = (), gap_hours: float = 24.0
) -> list[Conversation]:
    """Conversations from a Telegram Desktop `result.json` (one chat or a full export)."""
    try:
        data = _load_json(Path(path).read_bytes(), str(path))
    except OSError as exc:
        raise TranscriptFormatError(f"{path}: cannot read ({exc.strerror})") from exc
    if isinstance(data, dict) and isinstance(data.get("chats"), dict):
        chats = data["chats"].get("list") or []
    elif isinstance(data, dict) and isinstance(data.get("messages"), list):
        chats = [data]
    else:
        raise TranscriptFormatError(f"{path}: not a Telegram Desktop export (no messages)")
    conversations: list[Conversation] = []
    for chat in chats:
        conversations.extend(_telegram_chat(chat, set(staff), gap_hours))
    conversations.sort(key=lambda c: c.messages[0].time)
    return conversations


def _telegram_role(chat: dict[str, Any], message: dict[str, Any], staff: set[str]) -> str:
    sender = str(message.get("from_id") or "")
    chat_party = f"user{chat.get('id')}"
    kind = chat.get("type", "")
    if kind == "bot_chat":
        return "assistant" if sender == chat_party else "user"
    if sender in staff or str(message.get("from") or "") in staff:
        return "agent"
    if kind == "personal_chat":
        return "user" if sender == chat_party else "agent"
    return "user"


def _telegram_chat(
    chat: dict[str, Any], staff: set[str], gap_hours: float
) -> Iterable[Conversation]:
    current: list[Message] = []
    names: set[str] = set()
    part = 0
    for message in chat.get("messages") or []:
        if message.get("type") != "message":
            continue  # service messages: joins, pins, calls
        text = _telegram_text(message.get("text")).strip()
        if not text:
            continue
        when = float(message.get("date_unixtime") or 0)
        if current and when - current[-1].time > gap_hours * 3600:
            part += 1
            yield _telegram_conversation(chat, current, names, part)
            current, names = [], set()
        role = _telegram_role(chat, message, staff)
        if message.get("from"):
            names.add(str(message["from"]))
        current.append(
            Message(
                role=role,
                content=text,
                time=when,
                message_id=str(message.get("id", "")),
                user=str(message.get("from_id") or ""),
            )
        )
    if current:
        part += 1
        yield _telegram_conversation(chat, current, names, part)


def _telegram_conversation(
    chat: dict[str, Any], messages: list[Message], names: set[str], part: int
) -> Conversation:
    meta = {
        "id": f"telegram:{chat.get('id')}#{part}",
        "channel": "telegram",
        "source": "telegram",
        "names": sorted(names | ({chat["name"]} if chat.get("name") else set())),
    }
    return Conversation(messages, meta).finish_meta()


def write_queries(path: Path, queries: Iterable[LabelledQuery]) -> int:
    """Write labelled queries back in the eval format (`deskmate eval answers` reads it)."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for query in queries:
            record: dict[str, Any] = {"query": query.query, "relevant": list(query.relevant)}
            if query.answer is not None:
                record["answer"] = query.answer
            if query.history:
                record["history"] = [{"role": r, "content": c} for r, c in query.history]
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def dialogue_key(query: LabelledQuery) -> str:
    """What groups the turns of one dialogue: its opening message (or the query itself)."""
    return query.history[0][1] if query.history else query.query


def holds_out(query: LabelledQuery, fraction: float) -> bool:
    """Whether `query`'s dialogue falls in the held-out `fraction` (stable, by hash).

    Every turn of a dialogue lands on the same side, so a held-out turn's conversation
    was never trained on.
    """
    digest = hashlib.sha256(dialogue_key(query).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def import_queries(
    path: Path, hold_out: float = 0.0
) -> tuple[list[Conversation], list[LabelledQuery]]:
    """Conversations from labelled queries with a reference answer (the eval format).

    Each line `{"query", "history"?, "answer", "relevant"}` becomes one conversation: the
    history as context (`user` stays the customer; `agent`/`assistant` turns become
    `assistant` context), the query, then the reference answer as the `agent` reply to
    learn. Lines without an answer are skipped. Dialogues whose hash falls under
    `hold_out` are returned apart, unchanged, for evaluation.
    """
    conversations: list[Conversation] = []
    held: list[LabelledQuery] = []
    for number, query in enumerate(load_queries(path), start=1):
        if holds_out(query, hold_out):
            held.append(query)
            continue
        if not query.answer:
            continue
        context = [
            Message("user" if role == "user" else "assistant", text, time=float(index))
            for index, (role, text) in enumerate(query.history)
        ]
        end = float(len(context))
        messages = [
            *context,
            Message("user", query.query, time=end),
            Message("agent", query.answer, time=end + 1),
        ]
        meta = {
            "id": f"{path.stem}-{number}",
            "channel": "import",
            "relevant": list(query.relevant),
        }
        conversations.append(Conversation(messages, meta).finish_meta())
    return conversations, held
