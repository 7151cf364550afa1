"""Telegram channel latency: a customer's message to the bot's answer, end to end.

The real python-telegram-bot client long-polls the fake Bot API server of the tests;
messages go through the durable flow as in `deskmate serve` (intake, inbox, a brain
worker, outbox, a sender) on an embedded Redis, and the brain answers from the sample FAQ
with the quote backend. Measures the time from an update becoming available to the
sendMessage arriving at the server, one conversation at a time, and the renderer alone on
a long answer.

    .venv/bin/python -m bench.telegram [--messages 50]

`--stream N` measures instead what the customer sees of a generated answer (issue 20):
the hf backend as `deskmate serve` builds it (the default model with its starter
adapter, from DESKMATE_DATA_DIR), N questions asked one after another (each by a new
customer, so both runs answer without history), with DESKMATE_STREAM_REPLIES off and then
on. Time to first text = the question's update becoming available -> the first message
(partial or whole) arriving at the Bot API; time to full answer -> the reply itself
(sendMessage, or the edit that puts it in place of the partial text).

    DESKMATE_DATA_DIR=... .venv/bin/python -m bench.telegram --stream 4
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
from tests.fakes.telegram import CUSTOMER, FakeTelegram, text_message

QUESTIONS = [
    "how do I track my parcel?",
    "how long do I have to return something?",
    "how do I reset my password?",
    "can I order without an account?",
    "how do I cancel my order?",
]


STREAM_QUESTIONS = [
    "how long do I have to return something?",
    "how do I cancel my order?",
    "can I order without an account?",
    "how do I track my parcel?",
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


def _shown(fake: FakeTelegram, since: int) -> list[tuple[float, bool]]:
    """(when, whether it is the reply itself) of each message shown after call `since`."""
    return [
        (call.time, call.payload.get("parse_mode") == "HTML")
        for call in fake.calls[since:]
        if call.method in ("sendMessage", "editMessageText")
    ]


async def _reply_shown(fake: FakeTelegram, since: int) -> None:
    await fake.wait_for(lambda: any(full for _, full in _shown(fake, since)), 60.0)


async def streaming(questions: int) -> dict[bool, list[tuple[float, float]]]:
    """(time to first text, time to full answer) per question, streaming off and on."""
    from bots.app import make_backend

    settings = Settings.load()  # DESKMATE_DATA_DIR and the model settings, as serve reads them
    # What is measured is a generated answer: the sample's answers are long enough to be
    # quoted whole by default (DESKMATE_QUOTE_OVER_WORDS), so the model is asked for all.
    settings = dataclasses.replace(settings, quote_over_words=0)
    embedder = Embedder()
    retriever = Retriever(embedder, FaqIndex.build(load_faq([SAMPLE_FAQ]), embedder))
    backend = await make_backend(settings, embedder)
    print(f"answering with {backend.version}")
    timings: dict[bool, list[tuple[float, float]]] = {}
    with EmbeddedRedis(Path(tempfile.mkdtemp())) as server:
        redis = client(server.url)
        brain = Brain(retriever, ConversationStore(redis), backend)
        async with FakeTelegram() as fake:
            telegram = Settings(telegram_token=Secret(fake.token), telegram_api_url=fake.url)
            for stream in (False, True):
                flow = Flow(redis, RedisKeys(), name=f"bench-{stream}")
                adapter = TelegramAdapter(
                    telegram, flow.intake.handler, brain.feedback, redis=redis
                )
                running = flow.running(
                    brain.handle,
                    {adapter.channel: adapter},
                    streaming=brain.handle if stream else None,
                    show_partials=stream,
                )
                timings[stream] = []
                async with adapter, running:
                    for n in range(questions):
                        before = len(fake.calls)
                        asked = time.monotonic()
                        # A new customer each time: both modes answer without history.
                        customer = {**CUSTOMER, "id": 5000 + 100 * stream + n}
                        question = STREAM_QUESTIONS[n % len(STREAM_QUESTIONS)]
                        fake.push(text_message(question, sender=customer))

                        await _reply_shown(fake, before)
                        first = _shown(fake, before)[0][0]
                        full = next(at for at, is_full in _shown(fake, before) if is_full)
                        timings[stream].append((first - asked, full - asked))
                        await asyncio.sleep(0.5)  # let the typing indicator settle
        await redis.aclose()
    await backend.aclose()
    return timings


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
    parser.add_argument(
        "--stream", type=int, default=0, help="questions to a generated answer, streamed or not"
    )
    args = parser.parse_args()
    if args.stream:
        timings = asyncio.run(streaming(args.stream))
        print(f"Telegram, hf backend, {args.stream} questions one at a time (median s)")
        for stream, rows in timings.items():
            first = statistics.median(t for t, _ in rows)
            full = statistics.median(t for _, t in rows)
            label = "streaming on " if stream else "streaming off"
            print(f"  {label}: first text {first:5.2f} s, full answer {full:5.2f} s")
            print("    per question: " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in rows))
        return
    latencies = asyncio.run(end_to_end(args.messages))
    warm = latencies[1:] or latencies
    print(f"Telegram channel, {args.messages} messages, one at a time (first excluded)")
    print(f"  {'update -> answer p50':28} {statistics.median(warm):8.1f} ms")
    print(f"  {'update -> answer p95':28} {percentile(warm, 0.95):8.1f} ms")
    print(f"  {'first message':28} {latencies[0]:8.1f} ms")
    print(f"  {'render 10k-char answer':28} {render_cost():8.2f} ms")


if __name__ == "__main__":
    main()
