"""deskmate's web server: health and Prometheus metrics on DESKMATE_HTTP_ADDR."""

from __future__ import annotations

import time

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from bots.web import make_web_app, serve_web
from brain.answering.grounded import FALLBACKS
from brain.flow.stream import Intake
from brain.keys import RedisKeys
from brain.metrics import record_decision, record_delivery
from brain.types import Inbound


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


async def scrape(port: int, token: str = "", scheme: str = "Bearer") -> tuple[int, str]:
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as response,
    ):
        return response.status, await response.text()


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    return None


async def test_metrics_count_the_flow_and_read_queues_from_redis(redis: aioredis.Redis) -> None:
    """Messages in/out, decisions, latency and the queue gauges, as a scraper sees them."""
    keys = RedisKeys("dm:")
    async with serve_web(make_web_app(redis=redis, keys=keys), "127.0.0.1:0") as port:
        _, before = await scrape(port)
        intake = Intake(redis, keys)
        inbound = Inbound("telegram", "c1", "u1", "m1", "hello", time.time() - 2)
        assert await intake.submit(inbound)
        assert not await intake.submit(inbound)  # a repeat is not counted
        record_decision("telegram", "handoff", "v-test")
        record_delivery("telegram", time.time() - 1.5)
        await redis.set(keys.model_active, "support-v7")
        _, after = await scrape(port)

    def grew(name: str, **labels: str) -> float:
        return (sample(after, name, **labels) or 0.0) - (sample(before, name, **labels) or 0.0)

    assert grew("deskmate_messages_in_total", channel="telegram") == 1
    assert grew("deskmate_messages_out_total", channel="telegram") == 1
    assert grew("deskmate_decisions_total", channel="telegram", action="handoff") == 1
    assert grew("deskmate_handoffs_total", channel="telegram") == 1
    assert grew("deskmate_reply_latency_seconds_count", channel="telegram") == 1
    assert grew("deskmate_reply_latency_seconds_bucket", channel="telegram", le="1.0") == 0
    assert sample(after, "deskmate_queue_depth", queue="inbox") == 1
    oldest = sample(after, "deskmate_queue_oldest_pending_age_seconds", queue="inbox")
    assert oldest is not None and 0 <= oldest < 60
    assert sample(after, "deskmate_model_info", version="support-v7") == 1


async def test_metrics_token_is_required_when_set(redis: aioredis.Redis) -> None:
    app = make_web_app(redis=redis, metrics_token="s3cret")
    async with serve_web(app, "127.0.0.1:0") as port:
        assert (await scrape(port))[0] == 401
        assert (await scrape(port, "wrong"))[0] == 401
        status, text = await scrape(port, "s3cret")
        # RFC 7235: the scheme is case-insensitive.
        assert (await scrape(port, "s3cret", scheme="bearer"))[0] == 200
        assert (await scrape(port, "s3cret", scheme="Basic"))[0] == 401
    assert status == 200 and "deskmate_queue_depth" in text
