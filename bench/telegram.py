"""Telegram channel latency: a customer's message to the bot's answer, end to end.

The real python-telegram-bot client long-polls the fake Bot API server of the tests;
messages go through the durable flow as in `deskmate serve` (intake, inbox, a brain
worker, outbox, a sender) on an embedded Redis, and the brain answers from the sample FAQ
with the quote backend. Measures the time from an update becoming available to the
sendMessage arriving at the server, one conversation at a time, and the renderer alone on
a long answer.

    .venv/bin/python -m bench.telegram [--messages 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bots.telegram.adapter import TelegramAdapter
from bots.telegram.render import render_reply
from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.flow.wiring import Flow
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.redis_server import EmbeddedRedis, client
from brain.settings import SAMPLE_FAQ, Secret, Settings
from brain.types import Reply, Source
from retrieval.embedder import Embedder
from retrieval.faq import load_faq
from retrieval.index import FaqIndex
from retrieval.retriever import Retriever
from tests.fakes.telegram import FakeTelegram, text_message

QUESTIONS = [
    "how do I track my parcel?",
    "how long do I have to return something?",
    "how do I reset my password?",
    "can I order without an account?",
    "how do I cancel my order?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def end_to_end(messages: int) -> list[float]:
    embedder = Embedder()
    retriever = Retriever(embedder, FaqIndex.build(load_faq([SAMPLE_FAQ]), embedder))
    with EmbeddedRedis(Path(tempfile.mkdtemp())) as server:
        redis = client(server.url)
        brain = Brain(retriever, ConversationStore(redis), QuoteBackend())
        async with FakeTelegram() as fake:
            settings = Settings(telegram_token=Secret(fake.token), telegram_api_url=fake.url)
            flow = Flow(redis, RedisKeys(), name="bench")
            adapter = TelegramAdapter(settings, flow.intake.handler, brain.feedback, redis=redis)
            latencies = []
            async with adapter, flow.running(brain.handle, {adapter.channel: adapter}):
                for n in range(messages):
                    started = time.perf_counter()
                    fake.push(text_message(QUESTIONS[n % len(QUESTIONS)]))
                    await fake.wait_for_messages(n + 1)
                    latencies.append((time.perf_counter() - started) * 1000)
        await redis.aclose()
    return latencies


def render_cost(rounds: int = 200) -> float:
    text = "\n\n".join(f"Paragraph {n}. " + "Some <words> & more. " * 40 for n in range(12))
    source = Source("x", "Title", 0.9, "https://help.example/x")
    reply = Reply(text + " [1]", "answer", sources=(source,))
    started = time.perf_counter()
    for _ in range(rounds):
        render_reply(reply)
    return (time.perf_counter() - started) * 1000 / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    latencies = asyncio.run(end_to_end(args.messages))
    warm = latencies[1:] or latencies
    print(f"Telegram channel, {args.messages} messages, one at a time (first excluded)")
    print(f"  {'update -> answer p50':28} {statistics.median(warm):8.1f} ms")
    print(f"  {'update -> answer p95':28} {percentile(warm, 0.95):8.1f} ms")
    print(f"  {'first message':28} {latencies[0]:8.1f} ms")
    print(f"  {'render 10k-char answer':28} {render_cost():8.2f} ms")


if __name__ == "__main__":
    main()
