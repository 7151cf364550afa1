"""deskmate's web server (DESKMATE_HTTP_ADDR): webhooks, health and metrics.

Adapters in webhook/HTTP mode contribute routes; the composition root serves them all
from one aiohttp application.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from brain import metrics as m
from brain.flow.stream import flow_status
from brain.keys import RedisKeys
from brain.redis_server import RedisUnavailable

log = logging.getLogger(__name__)
REDIS_KEY: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
KEYS_KEY: web.AppKey[RedisKeys] = web.AppKey("keys", RedisKeys)
METRICS_TOKEN_KEY: web.AppKey[str] = web.AppKey("metrics_token", str)


def parse_json(body: bytes) -> Any:
    """A request body as JSON; `ValueError` for anything a client may send that is not
    (bad UTF-8, bad JSON, nesting deeper than the parser's recursion limit), so every
    such request is a 400, never a 500 that a client would retry forever."""
    try:
        return json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def bearer_token(request: web.Request) -> str:
    """The credentials of an `Authorization: Bearer <token>` header ("" without one).
    The scheme is case-insensitive (RFC 7235): `bearer` and `BEARER` are accepted too."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def token_matches(request: web.Request, token: str) -> bool:
    """Whether the request carries `token` as its bearer token (compared in constant time)."""
    return hmac.compare_digest(bearer_token(request).encode(), token.encode())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def refresh_from_redis(redis: aioredis.Redis, keys: RedisKeys) -> None:
    """Set the shared gauges (queues, waiting handoffs, processes, model) from Redis."""
    status = await flow_status(redis, keys)
    for stream in status.streams:
        m.QUEUE_DEPTH.labels(queue=stream.name).set(stream.length)
        m.QUEUE_PENDING.labels(queue=stream.name).set(stream.pending)
        m.QUEUE_OLDEST_AGE.labels(queue=stream.name).set(stream.oldest_age or 0.0)
    m.PROCESSES.set(len(status.processes))
    m.HANDOFFS_WAITING.set(int(await redis.zcard(keys.handoff_waiting)))
    version = status.model_version or m.served_model["version"] or "unset"
    m.MODEL.info({"version": str(version)})


async def metrics(request: web.Request) -> web.Response:
    """Every deskmate metric of this process in Prometheus' text format; the shared
    figures (queues, model) are read from Redis first. With DESKMATE_METRICS_TOKEN set,
    the scraper must send it as a bearer token."""
    token = request.app.get(METRICS_TOKEN_KEY, "")
    if token and not token_matches(request, token):
        raise web.HTTPUnauthorized(text="metrics need the bearer token\n")
    redis = request.app.get(REDIS_KEY)
    if redis is not None:
        try:
            await refresh_from_redis(redis, request.app[KEYS_KEY])
        except (RedisUnavailable, OSError) as exc:
            m.SCRAPE_ERRORS.inc()
            log.warning("metrics: cannot read queue figures from Redis: %s", exc)
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def make_web_app(
    routes: Iterable[web.RouteDef] = (),
    *,
    redis: aioredis.Redis | None = None,
    keys: RedisKeys | None = None,
    metrics_token: str = "",
    dashboard: web.Application | None = None,
) -> web.Application:
    """The web application: health, metrics (queue gauges when `redis` is given), the
    routes channels contribute and the staff dashboard (a sub-application)."""
    app = web.Application(client_max_size=1024 * 1024)
    if redis is not None:
        app[REDIS_KEY] = redis
        app[KEYS_KEY] = keys or RedisKeys()
    app[METRICS_TOKEN_KEY] = metrics_token
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.add_routes(list(routes))
    if dashboard is not None:
        app.router.add_get("/dashboard", to_dashboard)
        app.add_subapp("/dashboard", dashboard)
    return app


async def to_dashboard(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/dashboard/")


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@asynccontextmanager
async def serve_web(app: web.Application, addr: str) -> AsyncIterator[int]:
    """Serve `app` on host:port (port 0 = any free port); yields the bound port."""
    host, port = split_addr(addr)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    try:
        yield int(bound)
    finally:
        await runner.cleanup()
