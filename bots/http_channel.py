"""The generic http channel: a website chat widget, a CRM or a test talks to deskmate over HTTP.

Inbound: `POST /v1/messages` on deskmate's web server with JSON
`{"conversation_id", "user_id", "message_id", "text"}`, answered `202` once the message is
durable in Redis (`503` with `Retry-After` when Redis is down: send it again; a repeated
`message_id` is accepted and answered once). Replies: POSTed as JSON to
DESKMATE_HTTP_CALLBACK_URL, `{"conversation_id", "in_reply_to", "text", "action",
"sources", "confidence", "model_version", "notice"}`. With DESKMATE_HTTP_TOKEN set, both
directions carry `Authorization: Bearer <token>`. A reply sent again because an earlier
callback for it was cut mid-flight (deskmate killed or paused during the request) carries
`"redelivery": true`: a receiver that already has (`conversation_id`, `in_reply_to`)
drops it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Self

import aiohttp
from aiohttp import web

from bots.web import parse_json, token_matches
from brain.channel import DeliveryFailed, Handler, NetworkError, RetryAfter
from brain.flow.stream import reply_to_dict
from brain.redis_server import RedisUnavailable
from brain.text import replace_surrogates
from brain.types import Inbound, Reply

log = logging.getLogger(__name__)
PREFIX = "http:"  # conversation ids are namespaced per channel in Redis
MAX_ID_CHARS = 256
_FIELDS = ("conversation_id", "user_id", "message_id", "text")


def to_inbound(payload: Any) -> Inbound:
    """The message in a request body; `ValueError` says what is wrong with it."""
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    values: dict[str, str] = {}
    for name in _FIELDS:
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or (name != "text" and not value.strip()):
            raise ValueError(f"{name} must be a non-empty string")
        if name != "text" and len(value) > MAX_ID_CHARS:
            raise ValueError(f"{name} is longer than {MAX_ID_CHARS} characters")
        values[name] = replace_surrogates(value)  # a widget that cut a string mid-emoji
    return Inbound(
        channel="http",
        conversation_id=PREFIX + values["conversation_id"],
        user_id=values["user_id"],
        message_id=values["message_id"],
        text=values["text"],
    )


def render(conversation_id: str, reply: Reply) -> dict[str, Any]:
    """The callback body for a reply."""
    return {"conversation_id": conversation_id.removeprefix(PREFIX), **reply_to_dict(reply)}


class HttpChannel:
    """Receives on `POST /v1/messages`, delivers replies to a callback URL."""

    channel: ClassVar[str] = "http"

    def __init__(
        self, callback_url: str, on_message: Handler, *, token: str = "", timeout: float = 10.0
    ) -> None:
        self.callback_url = callback_url
        self.on_message = on_message
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def web_routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self.receive)]

    async def __aenter__(self) -> Self:
        if not self._token:
            log.warning(
                "http channel: DESKMATE_HTTP_TOKEN is not set, so anyone who can reach "
                "POST /v1/messages can write as any customer; set it, or bind "
                "DESKMATE_HTTP_ADDR to a private address"
            )
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    def _authorized(self, request: web.Request) -> bool:
        return not self._token or token_matches(request, self._token)

    async def receive(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        try:
            payload = parse_json(await request.read())
        except ValueError as exc:
            return web.json_response({"error": f"the body must be JSON: {exc}"}, status=400)
        try:
            inbound = to_inbound(payload)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            await self.on_message(inbound)
        except RedisUnavailable as exc:
            log.error("http message %s not accepted: %s", inbound.message_id, exc)
            return web.json_response(
                {"error": "temporarily unavailable; send the message again"},
                status=503,
                headers={"Retry-After": "1"},
            )
        return web.json_response(
            {"status": "accepted", "message_id": inbound.message_id}, status=202
        )

    async def send(self, conversation_id: str, reply: Reply) -> None:
        """POST the reply to the callback URL; failures map to the delivery exceptions.
        A silent reply (a person holds the conversation) is not posted."""
        await self._post(conversation_id, reply, redelivery=False)

    async def resend(self, conversation_id: str, reply: Reply) -> None:
        """`send` for a reply an earlier, cut-off callback may have delivered already."""
        await self._post(conversation_id, reply, redelivery=True)

    async def _post(self, conversation_id: str, reply: Reply, *, redelivery: bool) -> None:
        if self._session is None:
            raise RuntimeError("HttpChannel.send outside `async with`")
        if reply.action == "none" and not reply.text:
            return
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        body = render(conversation_id, reply)
        if redelivery:
            body["redelivery"] = True
        try:
            post = self._session.post(self.callback_url, json=body, headers=headers)
            async with post as response:
                if response.status < 300:
                    return
                detail = (await response.text())[:200]
                if response.status == 429:
                    raise RetryAfter(_retry_after(response.headers.get("Retry-After")), detail)
                if response.status >= 500 or response.status == 408:
                    raise NetworkError(f"callback answered {response.status}: {detail}")
                raise DeliveryFailed(f"callback answered {response.status}: {detail}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise NetworkError(f"callback unreachable: {exc!r}") from exc


def _retry_after(value: str | None) -> float:
    try:
        return float(value) if value else 1.0
    except ValueError:
        return 1.0
