"""What every platform adapter looks like, and the handlers it calls.

Adapters translate: a platform update becomes an `Inbound` handed to `on_message`, a
button press becomes a `Feedback` handed to `on_feedback`, and `send` renders a `Reply`.
They never decide what to say. Who the handlers are (the brain directly, or the durable
inbox of the message flow) is decided by the composition root.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar, Protocol, Self

from aiohttp import web

from brain.types import Feedback, Inbound, Reply

Handler = Callable[[Inbound], Awaitable[None]]
FeedbackHandler = Callable[[Feedback], Awaitable[None]]


class Adapter(Protocol):
    """A channel. Built with (settings, on_message, on_feedback); entering it checks the
    credentials (getMe / auth.test: fail fast on bad tokens) and starts receiving (long
    polling, Socket Mode); leaving it stops. In webhook/HTTP mode it receives through
    `web_routes()`, served by deskmate's web server."""

    channel: ClassVar[str]

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def web_routes(self) -> list[web.RouteDef]: ...

    async def send(self, conversation_id: str, reply: Reply) -> str | None:
        """Deliver `reply`; the platform's id of the message sent, where it gives one."""
        ...


class Redelivering(Protocol):
    """An adapter whose platform lets a receiver recognise a repeat. The sender calls
    `resend` instead of `send` when an earlier call for the same reply had an unknown
    outcome (cut mid-flight, timed out): it may have arrived."""

    async def resend(self, conversation_id: str, reply: Reply) -> str | None: ...


class DeliveryError(Exception):
    """`send` could not deliver a reply. Adapters map platform failures to the subclasses
    at one choke point; the sender decides from the class whether to try again."""


class RetryAfter(DeliveryError):
    """Rate limited (HTTP 429): try again after `seconds` (the platform's retry_after)."""

    def __init__(self, seconds: float, message: str = "") -> None:
        super().__init__(message or f"rate limited; retry after {seconds:g}s")
        self.seconds = max(0.0, float(seconds))


class NetworkError(DeliveryError):
    """A transient failure (connection error, timeout, 5xx): try again with backoff."""


class DeliveryFailed(DeliveryError):
    """A permanent failure (blocked by the user, chat gone, bad request): do not retry."""
