"""Slack channel benchmark: signed Events API requests through the whole stack.

Real bolt app, real slack_sdk client, real brain (sample FAQ, MiniLM, quote backend), and
the durable flow of `deskmate serve` (intake, inbox, brain workers, outbox, senders) on an
embedded Redis; Slack's Web API is the local fake from the tests. Each message is a DM in
its own channel; `--concurrency` users each send a question and wait for its answer before
sending the next (closed loop). Reports how fast Slack gets its acknowledgement (it must be
under 3 s) and how long until the answer replaces the placeholder (polled every 5 ms).

    python -m bench.slack [--messages 200] [--concurrency 20] [--workers 4] [--senders 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import numpy as np

from bots.slack.adapter import SlackAdapter
from bots.web import make_web_app, serve_web
from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.flow.wiring import Flow
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.redis_server import EmbeddedRedis, client
from brain.settings import SAMPLE_FAQ, Secret, Settings
from retrieval.embedder import Embedder
from retrieval.faq import load_faq
from retrieval.index import FaqIndex
from retrieval.retriever import Retriever
from tests.fakes.slack import FakeSlack, signed_headers

SECRET = "bench-signing-secret"
QUESTIONS = [
    "how many days do I have to send an item back?",
    "how do I track my parcel?",
    "can I change my order after placing it?",
    "do you ship to Norway?",
]


async def run(messages: int, concurrency: int, workers: int, senders: int) -> dict[str, float]:
    embedder = Embedder()
    index = FaqIndex.build(load_faq([SAMPLE_FAQ]), embedder)
    fake = FakeSlack()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as server:
        redis = client(server.url)
        brain = Brain(Retriever(embedder, index), ConversationStore(redis), QuoteBackend())
        brain.retriever.search("warm up")
        async with serve_web(fake.app(), "127.0.0.1:0") as fake_port:
            fake.url = f"http://127.0.0.1:{fake_port}"
            settings = Settings(
                data_dir=Path(tmp),
                slack_bot_token=Secret(fake.token),
                slack_signing_secret=Secret(SECRET),
                slack_api_url=f"{fake.url}/api",
            )
            flow = Flow(redis, RedisKeys(), name="bench")
            adapter = SlackAdapter(settings, flow.intake.handler, brain.feedback, redis=redis)
            web_app = make_web_app(adapter.web_routes())
            async with (
                adapter,
                serve_web(web_app, "127.0.0.1:0") as port,
                aiohttp.ClientSession() as session,
                flow.running(
                    brain.handle, {adapter.channel: adapter}, workers=workers, senders=senders
                ),
            ):
                endpoint = f"http://127.0.0.1:{port}/slack/events"
                sent: dict[str, float] = {}
                acks: list[float] = []
                gate = asyncio.Semaphore(concurrency)
                answered: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

                async def watch() -> None:
                    """Wake each user once its answer reached the fake Slack (5 ms polls)."""
                    seen = 0
                    while True:
                        for call in fake.calls[seen:]:
                            if call.method == "chat.update":
                                answered[call.payload["channel"]].set()
                        seen = len(fake.calls)
                        await asyncio.sleep(0.005)

                watcher = asyncio.create_task(watch())

                async def one(n: int) -> None:
                    channel = f"D{n:05d}"
                    event = {
                        "type": "message",
                        "channel_type": "im",
                        "channel": channel,
                        "user": "U1",
                        "text": QUESTIONS[n % len(QUESTIONS)],
                        "ts": f"{1700000000 + n}.000100",
                    }
                    body = json.dumps(
                        {
                            "type": "event_callback",
                            "event_id": f"Ev{n}",
                            "team_id": "T1",
                            "event": event,
                        }
                    )
                    headers = signed_headers(body, SECRET)
                    async with gate:
                        start = time.monotonic()
                        sent[channel] = start
                        async with session.post(endpoint, data=body, headers=headers) as reply:
                            assert reply.status == 200, reply.status
                        acks.append(time.monotonic() - start)
                        await fake.wait_for(
                            lambda: any(
                                p["channel"] == channel for p in fake.payloads("chat.update")
                            )
                        )

                began = time.monotonic()
                await asyncio.gather(*(one(n) for n in range(messages)))
                await fake.wait_for(
                    lambda: len(fake.payloads("chat.update")) >= messages, timeout=300
                )
                elapsed = time.monotonic() - began
                watcher.cancel()
                answers = [
                    call.time - sent[call.payload["channel"]]
                    for call in fake.calls
                    if call.method == "chat.update"
                ]
        await redis.aclose()
    return {
        "ack p50 ms": float(np.percentile(acks, 50) * 1000),
        "ack p95 ms": float(np.percentile(acks, 95) * 1000),
        "answer p50 ms": float(np.percentile(answers, 50) * 1000),
        "answer p95 ms": float(np.percentile(answers, 95) * 1000),
        "messages/s": messages / elapsed,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slack", description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4, help="brain workers (serve's default)")
    parser.add_argument("--senders", type=int, default=4, help="reply senders (serve's default)")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.messages, args.concurrency, args.workers, args.senders))
    print(
        f"Slack HTTP mode, {args.messages} DMs, {args.concurrency} in flight, "
        f"{args.workers} brain workers, {args.senders} senders"
    )
    print(f"  {'metric':16} {'value':>10}")
    for name, value in figures.items():
        print(f"  {name:16} {value:10.1f}")


if __name__ == "__main__":
    main()
