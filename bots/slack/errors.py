"""Slack API failures mapped to the channel's delivery errors, at one choke point: the
replies of the adapter and the staff desk's posts both go through `delivering`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError

from brain.channel import DeliveryFailed, NetworkError, RetryAfter
from brain.redis_server import RedisUnavailable

T = TypeVar("T")


async def delivering(operation: Callable[[], Awaitable[T]]) -> T:
    """Run Slack calls, mapping failures to the adapter's delivery errors: the sender
    retries `RetryAfter` (429, honouring Retry-After) and `NetworkError` (5xx, network,
    Redis), not `DeliveryFailed` (Slack refused the request)."""
    try:
        return await operation()
    except SlackApiError as exc:
        if exc.response.status_code == 429:
            retry_after = float(exc.response.headers.get("Retry-After", 1) or 1)
            raise RetryAfter(retry_after, str(exc)) from exc
        if exc.response.status_code >= 500:
            raise NetworkError(str(exc)) from exc
        raise DeliveryFailed(str(exc)) from exc
    except (aiohttp.ClientError, TimeoutError, RedisUnavailable) as exc:
        raise NetworkError(str(exc)) from exc
