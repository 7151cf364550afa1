"""deskmate's web server (DESKMATE_HTTP_ADDR): webhooks, health and metrics.

Adapters in webhook/HTTP mode contribute routes; the composition root serves them all
from one aiohttp application.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Every deskmate metric of this process in Prometheus' text format."""
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def make_web_app(routes: Iterable[web.RouteDef] = ()) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.add_routes(list(routes))
    return app


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
