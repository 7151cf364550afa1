"""deskmate's web server: health and Prometheus metrics on DESKMATE_HTTP_ADDR."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bots.web import make_web_app, serve_web
from brain.answering.grounded import FALLBACKS


async def test_metrics_are_served_in_prometheus_text_format() -> None:
    FALLBACKS.labels(reason="uncited").inc()
    async with (
        serve_web(make_web_app(), "127.0.0.1:0") as port,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
            assert (await health.json()) == {"status": "ok"}
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    fallbacks = families["deskmate_generation_fallbacks"]
    uncited = [s for s in fallbacks.samples if s.labels.get("reason") == "uncited"]
    assert uncited and uncited[0].value >= 1
    assert "deskmate_generation_batch_size" in families  # histograms too
