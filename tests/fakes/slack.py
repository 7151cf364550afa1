"""A fake Slack Web API for tests: an aiohttp app the real slack_sdk client talks to.

It speaks the documented wire format (`POST/GET /api/{method}`, `Authorization: Bearer`,
`{"ok": ...}` bodies, 429 with `Retry-After`) and records every call's payload, so tests
assert on what deskmate actually sent. `/response/{id}` stands in for slash-command
response URLs. `signed_headers` signs requests sent to deskmate as Slack does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

JSON = dict[str, Any]


def signed_headers(
    body: str,
    secret: str,
    content_type: str = "application/json",
    *,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers Slack sends with a request `body`: its content type, the timestamp, and
    the signature over both with the app's signing secret (slack_sdk's implementation of
    Slack's algorithm). `timestamp` defaults to now; an old one makes a stale request."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature or "",
    }


@dataclass
class Call:
    """One request the fake received: the API method (or "response"), its payload, status."""

    method: str
    payload: JSON
    status: int = 200
    response: JSON = field(default_factory=dict)
    time: float = field(default_factory=time.monotonic)


class FakeSlack:
    """The fake server's state. Serve `app()`; point the client at `{url}/api/`."""

    def __init__(
        self,
        token: str = "xoxb-test-token",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_token: str = "xapp-test-token",
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.socket: web.WebSocketResponse | None = None
        self.socket_acks: list[JSON] = []
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.url = ""
        self.calls: list[Call] = []
        self.group_members: dict[str, list[str]] = {}
        self._failures: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
        self._holds: dict[str, list[asyncio.Event]] = defaultdict(list)
        self.held: list[tuple[str, JSON]] = []  # calls received and kept waiting
        self._ts = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response_url)
        app.router.add_get("/socket", self._socket_mode)
        return app

    async def push(self, envelope: JSON, envelope_id: str, kind: str = "events_api") -> None:
        """Send a Socket Mode envelope down the open WebSocket."""
        await self.wait_for(lambda: self.socket is not None)
        assert self.socket is not None
        message = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": envelope,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        await self.socket.send_json(message)

    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        await socket.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}
        )
        self.socket = socket
        async for message in socket:
            self.socket_acks.append(json.loads(message.data))
        self.socket = None
        return socket

    def fail_next(
        self, method: str, status: int = 429, error: str = "ratelimited", retry_after: int = 1
    ) -> None:
        """Answer the next call of `method` with an error (429 carries Retry-After)."""
        self._failures[method].append((status, error, retry_after))

    def hold_next(self, method: str) -> asyncio.Event:
        """Keep the next call of `method` waiting once received, until the event returned
        is set; then it is carried out and answered (a request in flight when its
        sender dies: Slack may still carry it out)."""
        release = asyncio.Event()
        self._holds[method].append(release)
        return release

    def responses(self, method: str) -> list[JSON]:
        """What the fake answered to the successful calls of `method`, in order."""
        return [
            call.response for call in self.calls if call.method == method and call.status == 200
        ]

    def payloads(self, method: str) -> list[JSON]:
        """Payloads of the successful calls of `method`, in order."""
        return [call.payload for call in self.calls if call.method == method and call.status == 200]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last calls: {self.calls[-5:]}")
            await asyncio.sleep(0.01)

    async def _payload(self, request: web.Request) -> JSON:
        payload: JSON = dict(request.query)
        if request.content_type == "application/json":
            payload.update(await request.json())
        elif request.can_read_body:
            payload.update(await request.post())
        return payload

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        payload = await self._payload(request)
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer "):
            self.calls.append(Call(method, payload, 401))
            return web.json_response({"ok": False, "error": "not_authed"})
        expected = self.app_token if method == "apps.connections.open" else self.token
        if authorization.removeprefix("Bearer ") != expected:
            self.calls.append(Call(method, payload, 401))
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if self._failures[method]:
            status, error, retry_after = self._failures[method].pop(0)
            self.calls.append(Call(method, payload, status))
            headers = {"Retry-After": str(retry_after)} if status == 429 else {}
            return web.json_response({"ok": False, "error": error}, status=status, headers=headers)
        if self._holds[method]:
            release = self._holds[method].pop(0)
            self.held.append((method, payload))
            await release.wait()
        answer = self._answer(method, payload)
        self.calls.append(Call(method, payload, response=answer))
        return web.json_response(answer)

    def _answer(self, method: str, payload: JSON) -> JSON:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://example.slack.com/",
                "team": "Example",
                "team_id": "T1",
                "user": "deskmate",
                "user_id": self.bot_user_id,
                "bot_id": self.bot_id,
            }
        if method == "apps.connections.open":
            return {"ok": True, "url": self.url.replace("http", "ws", 1) + "/socket"}
        if method == "chat.postMessage":
            ts = f"{1700001000 + next(self._ts)}.000100"
            message = {
                "type": "message",
                "text": payload.get("text", ""),
                "ts": ts,
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
            }
            if payload.get("thread_ts"):
                message["thread_ts"] = payload["thread_ts"]
            return {"ok": True, "channel": payload["channel"], "ts": ts, "message": message}
        if method == "chat.update":
            return {
                "ok": True,
                "channel": payload["channel"],
                "ts": payload["ts"],
                "text": payload.get("text", ""),
            }
        if method == "chat.delete":
            return {"ok": True, "channel": payload["channel"], "ts": payload["ts"]}
        if method == "usergroups.users.list":
            group = payload.get("usergroup", "")
            if group not in self.group_members:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": self.group_members[group]}
        if method == "users.info":
            user = payload.get("user", "")
            return {"ok": True, "user": {"id": user, "name": user.lower(), "is_bot": False}}
        return {"ok": False, "error": "unknown_method"}

    async def _response_url(self, request: web.Request) -> web.Response:
        self.calls.append(Call("response", json.loads(await request.text())))
        return web.Response(text="ok")
