"""A fake Telegram Bot API server for tests: the real python-telegram-bot client talks to it.

An aiohttp app on port 0 that speaks `/bot<token>/<method>` with the documented JSON
shapes, records every call's (method, payload) and serves scripted updates to
getUpdates. Like Telegram, it refuses HTML it could not parse and messages over 4096
characters, and it can answer a call with a scripted error (e.g. 429 with retry_after).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from types import TracebackType
from typing import Any

from aiohttp import web

from bots.web import serve_web

BOT_USER = {
    "id": 777000,
    "is_bot": True,
    "first_name": "Northwind Help",
    "username": "northwind_help_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
CUSTOMER = {
    "id": 42,
    "is_bot": False,
    "first_name": "Ada",
    "username": "ada",
    "language_code": "en",
}
GROUP = {"id": -1001234567890, "title": "Northwind customers", "type": "supergroup"}
# Form fields that are plain strings on the wire; every other field is JSON-encoded.
_STRING_FIELDS = {"text", "caption", "url", "secret_token", "callback_query_id", "action"}
_HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre"}
_BAD_AMPERSAND = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")


@dataclass
class Call:
    """One request the bot made, as the server decoded it, and the status it got."""

    method: str
    payload: dict[str, Any]
    status: int
    time: float


class _TelegramHtml(HTMLParser):
    """Checks text the way Telegram's HTML parse mode does; collects the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.visible: list[str] = []
        self.error = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_TAGS:
            self.error = f'Unsupported start tag "{tag}"'
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.error = f'Unexpected end tag "{tag}"'

    def handle_data(self, data: str) -> None:
        self.visible.append(data)


def visible_text(text: str) -> str:
    """What a user sees of an HTML-mode message (raises ValueError where Telegram would)."""
    if _BAD_AMPERSAND.search(text):
        raise ValueError("Can't parse entities: unsupported entity")
    parser = _TelegramHtml()
    parser.feed(text)
    parser.close()
    if parser.error or parser.open:
        raise ValueError(f"Can't parse entities: {parser.error or 'unclosed tag'}")
    return "".join(parser.visible)


class FakeTelegram:
    """The fake Bot API. `async with FakeTelegram() as fake:` serves it at `fake.url`."""

    def __init__(self, token: str = "777000:TEST-token") -> None:
        self.token = token
        self.url = ""
        self.calls: list[Call] = []
        self.delivered: list[dict[str, Any]] = []  # messages sent by the bot, as returned
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(9000)
        self._message_ids = itertools.count(500)
        self._new_update = asyncio.Event()
        self._errors: dict[str, list[tuple[int, str, dict[str, Any] | None]]] = {}
        self._serving: Any = None
        self._closing = False

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._serving = serve_web(app, "127.0.0.1:0")
        port = await self._serving.__aenter__()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._new_update.set()  # end pending long polls, or shutting down waits for them
        await self._serving.__aexit__(kind, exc, tb)

    # Scripting

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an update_id is assigned if it has none)."""
        update.setdefault("update_id", next(self._update_ids))
        self._updates.append(update)
        self._new_update.set()
        return update

    def fail_next(
        self, method: str, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        """Answer the next call of `method` with this error instead."""
        self._errors.setdefault(method, []).append((status, description, parameters))

    def sent(self, method: str, status: int | None = 200) -> list[dict[str, Any]]:
        """Payloads of the calls of `method` (answered with `status`; None: any)."""
        return [c.payload for c in self.calls if c.method == method and status in (None, c.status)]

    async def wait_for(
        self, condition: Callable[[], object], timeout: float = 10.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                calls = [(c.method, c.status) for c in self.calls]
                raise AssertionError(f"timed out waiting for {what or condition}; calls: {calls}")
            await asyncio.sleep(0.01)

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until `count` messages were delivered; return all delivered so far."""
        await self.wait_for(
            lambda: len(self.sent("sendMessage")) >= count, timeout, f"{count} sendMessage"
        )
        return self.sent("sendMessage")

    # The API

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        match = re.fullmatch(r"bot([^/]+)/(\w+)", path)
        if not match:
            return self._error(404, "Not Found")
        token, method = match[1], match[2]
        payload = await self._payload(request)
        if token != self.token:
            return self._record(method, payload, self._error(401, "Unauthorized"))
        queued = self._errors.get(method)
        if queued:
            status, description, parameters = queued.pop(0)
            return self._record(method, payload, self._error(status, description, parameters))
        if method == "getUpdates":
            # Not recorded: it is called continuously while polling.
            return await self._get_updates(payload)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._record(method, payload, self._error(404, "Not Found: method not found"))
        try:
            result = handler(payload)
        except ValueError as exc:
            return self._record(method, payload, self._error(400, f"Bad Request: {exc}"))
        return self._record(method, payload, web.json_response({"ok": True, "result": result}))

    @staticmethod
    async def _payload(request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data: dict[str, Any] = await request.json()
            return data
        form = await request.post()
        payload: dict[str, Any] = {}
        for key, value in form.items():
            text = str(value)
            if key in _STRING_FIELDS:
                payload[key] = text
                continue
            try:
                payload[key] = json.loads(text)
            except ValueError:
                payload[key] = text
        return payload

    def _record(self, method: str, payload: dict[str, Any], response: web.Response) -> web.Response:
        self.calls.append(Call(method, payload, response.status, time.monotonic()))
        return response

    @staticmethod
    def _error(
        status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    async def _get_updates(self, payload: dict[str, Any]) -> web.Response:
        offset = int(payload.get("offset") or 0)
        # Updates below the offset are confirmed, as on Telegram: forget them.
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and payload.get("timeout") and not self._closing:
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), float(payload["timeout"]))
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        batch = self._updates[: int(payload.get("limit") or 100)]
        return web.json_response({"ok": True, "result": batch})

    def _api_getMe(self, payload: dict[str, Any]) -> dict[str, Any]:
        return BOT_USER

    def _api_setMyCommands(self, payload: dict[str, Any]) -> bool:
        return True

    def _api_deleteWebhook(self, payload: dict[str, Any]) -> bool:
        return True

    def _api_setWebhook(self, payload: dict[str, Any]) -> bool:
        if not str(payload.get("url", "")).startswith("https://"):
            raise ValueError("bad webhook: An HTTPS URL must be provided for webhook")
        return True

    def _api_sendChatAction(self, payload: dict[str, Any]) -> bool:
        return True

    def _api_answerCallbackQuery(self, payload: dict[str, Any]) -> bool:
        return True

    def _api_sendMessage(self, payload: dict[str, Any]) -> dict[str, Any]:
        text = str(payload.get("text", ""))
        shown = visible_text(text) if payload.get("parse_mode") == "HTML" else text
        if not shown.strip():
            raise ValueError("message text is empty")
        if len(shown.encode("utf-16-le")) // 2 > 4096:
            raise ValueError("message is too long")
        message = self._message(payload["chat_id"], shown)
        if payload.get("reply_markup"):
            message["reply_markup"] = payload["reply_markup"]
        if payload.get("message_thread_id"):
            message["message_thread_id"] = payload["message_thread_id"]
            message["is_topic_message"] = True
        self.delivered.append(message)
        return message

    def _api_editMessageText(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Edits a message the bot sent (`delivered` shows its text now), with Telegram's
        errors for a message it does not have and for an edit that changes nothing."""
        text = str(payload.get("text", ""))
        shown = visible_text(text) if payload.get("parse_mode") == "HTML" else text
        if not shown.strip():
            raise ValueError("message text is empty")
        message = next(
            (
                m
                for m in self.delivered
                if m["chat"]["id"] == int(payload["chat_id"])
                and m["message_id"] == int(payload["message_id"])
            ),
            None,
        )
        if message is None:
            raise ValueError("message to edit not found")
        markup = payload.get("reply_markup") or None
        if message["text"] == shown and message.get("reply_markup") == markup:
            raise ValueError(
                "message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message"
            )
        message["text"] = shown
        message["edit_date"] = int(time.time())
        if markup:
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        return message

    def _api_deleteMessage(self, payload: dict[str, Any]) -> bool:
        self.delivered = [
            m
            for m in self.delivered
            if not (
                m["chat"]["id"] == int(payload["chat_id"])
                and m["message_id"] == int(payload["message_id"])
            )
        ]
        return True

    def _api_editMessageReplyMarkup(self, payload: dict[str, Any]) -> dict[str, Any]:
        message = self._message(payload["chat_id"], "(edited)")
        message["message_id"] = payload["message_id"]
        if payload.get("reply_markup"):
            message["reply_markup"] = payload["reply_markup"]
        return message

    def _message(self, chat_id: int, text: str) -> dict[str, Any]:
        chat: dict[str, Any] = (
            {**GROUP, "id": chat_id}
            if int(chat_id) < 0
            else {"id": chat_id, "first_name": "Ada", "type": "private"}
        )
        return {
            "message_id": next(self._message_ids),
            "from": BOT_USER,
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }


# Updates as Telegram sends them.

_message_ids = itertools.count(1)


def text_message(
    text: str,
    *,
    chat: dict[str, Any] | None = None,
    sender: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An update with a text message (private chat with CUSTOMER unless `chat` says)."""
    sender = sender or CUSTOMER
    chat = chat or {"id": sender["id"], "first_name": sender["first_name"], "type": "private"}
    message: dict[str, Any] = {
        "message_id": next(_message_ids),
        "from": sender,
        "chat": chat,
        "date": int(time.time()),
        "text": text,
    }
    entities = [
        {"type": "mention", "offset": m.start(), "length": len(m[0])}
        for m in re.finditer(r"@\w+", text)
    ]
    if text.startswith("/"):
        entities.insert(0, {"type": "bot_command", "offset": 0, "length": len(text.split()[0])})
    if entities:
        message["entities"] = entities
    message.update(extra)
    return {"message": message}


def group_message(text: str, **extra: Any) -> dict[str, Any]:
    return text_message(text, chat=GROUP, **extra)


def sticker_message() -> dict[str, Any]:
    update = text_message("")
    del update["message"]["text"]
    update["message"]["sticker"] = {
        "file_id": "CAACAgIAAxkBAAEB",
        "file_unique_id": "AgADGQADwDZPEw",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": "👍",
    }
    return update


def button_press(
    message: dict[str, Any], data: str, presser: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An update for a press on an inline button of `message` (as the bot received it)."""
    return {
        "callback_query": {
            "id": f"cbq-{next(_message_ids)}",
            "from": presser or CUSTOMER,
            "message": message,
            "chat_instance": "-8217653",
            "data": data,
        }
    }
