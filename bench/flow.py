"""Message-flow benchmark: messages/s and inbound-to-delivered latency through a real
`deskmate serve` process (http channel, Redis streams, brain workers, senders) with the
quote backend, for 1, 2 and 4 brain workers.

Three workloads, labelled apart:
- core: the Redis flow alone in this process (intake script, inbox, workers with a trivial
  answer, outbox, senders to an in-memory channel): no HTTP, no Brain;
- plumbing: greetings, which the real Brain answers without retrieval or a model, so the
  figure is what the flow itself sustains (intake, streams, locks, delivery);
- full: FAQ questions, answered with retrieval (MiniLM embedding + FAISS + BM25) and quoted.

Latency is from the POST to /v1/messages to the callback's arrival; the plumbing's added
latency compares one message at a time end to end against `Brain.handle` called directly.

    .venv/bin/python -m bench.flow [--messages 1000] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Self

import aiohttp
from aiohttp import web

from bots.indexing import import_faq
from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.flow.wiring import Flow
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.redis_server import EmbeddedRedis, client
from brain.settings import SAMPLE_FAQ
from brain.types import Inbound, Reply
from retrieval.embedder import Embedder
from retrieval.index import Thresholds
from retrieval.retriever import Retriever
from tests.fakes.callback_server import CallbackServer

DESKMATE = str(Path(sys.executable).with_name("deskmate"))
GREETINGS = ["hi", "hello", "thanks", "hey there"]
QUESTIONS = [
    "how do I track my parcel?",
    "how many days do I have to send an item back?",
    "how do I reset my password?",
    "do you ship internationally?",
]
THRESHOLDS = {"DESKMATE_ANSWER_THRESHOLD": "0.3", "DESKMATE_CLARIFY_THRESHOLD": "0.2"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def start_serve(env: dict[str, str], workers: int) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        DESKMATE, "serve", "--workers", str(workers), "--senders", "4",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 180)).decode()
    port = int(line.rsplit(":", 1)[1])
    return process, f"http://127.0.0.1:{port}/v1/messages"


async def run_load(
    url: str, callback: CallbackServer, texts: list[str], count: int, tag: str, concurrency: int
) -> tuple[float, list[float]]:
    """Send `count` messages over count/10 conversations; (messages/s, latencies)."""
    callback.received.clear()
    sent_at: dict[str, float] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def client_task(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            message_id = f"{tag}-{n}"
            body = {"conversation_id": f"{tag}-c{n % max(1, count // 10)}", "user_id": "u",
                    "message_id": message_id, "text": texts[n % len(texts)]}  # fmt: skip
            sent_at[message_id] = time.time()
            async with session.post(url, json=body) as response:
                assert response.status == 202, response.status

    started = time.time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client_task(session) for _ in range(concurrency)))
    await callback.wait_for(count, timeout=600)
    finished = max(r.time for r in callback.received)
    latencies = [r.time - sent_at[r.body["in_reply_to"]] for r in callback.received]
    return count / (finished - started), latencies


async def sequential_latency(
    url: str, callback: CallbackServer, texts: list[str], count: int, tag: str
) -> list[float]:
    """One message at a time: the latency the flow adds when nothing queues."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        for n in range(count):
            callback.received.clear()
            body = {"conversation_id": f"{tag}-c{n % 5}", "user_id": "u",
                    "message_id": f"{tag}-{n}", "text": texts[n % len(texts)]}  # fmt: skip
            started = time.time()
            async with session.post(url, json=body) as response:
                assert response.status == 202
            await callback.wait_for(1, timeout=30)
            latencies.append(callback.received[0].time - started)
    return latencies


class _Counting:
    """An in-memory channel for the core measurement: counts what it is sent."""

    channel: ClassVar[str] = "http"

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.sent = 0
        self.done = asyncio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def web_routes(self) -> list[web.RouteDef]:
        return []

    async def send(self, conversation_id: str, reply: Reply) -> None:
        self.sent += 1
        if self.sent >= self.expected:
            self.done.set()


async def core_rate(redis_url: str, workers: int, count: int) -> float:
    """Messages/s through intake, inbox, workers, outbox and senders in this process, with
    a trivial answer and an in-memory channel: the Redis flow alone, no HTTP, no Brain."""
    redis = client(redis_url)
    keys = RedisKeys(f"bench-core{workers}:")
    channel = _Counting(count)

    async def answer(inbound: Inbound) -> Reply:
        return Reply("hello", "none")

    flow = Flow(redis, keys, name="core")
    async with flow.running(answer, {"http": channel}, workers=workers, senders=4):
        started = time.time()

        async def submit(offset: int) -> None:
            for n in range(offset, count, 16):
                await flow.intake.submit(Inbound("http", f"core-c{n % 100}", "u", f"{n}", "hi"))

        await asyncio.gather(*(submit(offset) for offset in range(16)))
        await asyncio.wait_for(channel.done.wait(), 300)
        rate = count / (time.time() - started)
    await redis.aclose()
    return rate


async def direct_latency(
    redis_url: str, retriever: Retriever, texts: list[str], count: int
) -> list[float]:
    """`Brain.handle` called directly on the same Redis: the baseline."""
    redis = client(redis_url)
    brain = Brain(retriever, ConversationStore(redis, "bench-direct:"), QuoteBackend(),
                  thresholds=Thresholds(0.3, 0.2))  # fmt: skip
    latencies = []
    for n in range(count):
        message = Inbound("http", f"direct-c{n % 5}", "u", f"d{n}", texts[n % len(texts)])
        started = time.perf_counter()
        await brain.handle(message)
        latencies.append(time.perf_counter() - started)
    await redis.aclose()
    return latencies


async def measure(messages: int, worker_counts: list[int], concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis_server:
        data_dir = Path(tmp) / "data"
        embedder = Embedder()
        index, _ = import_faq(data_dir / "index", [SAMPLE_FAQ], embedder, show_progress=False)
        retriever = Retriever(embedder, index)
        retriever.search("warm up")
        async with CallbackServer() as callback:
            env = {**os.environ, **THRESHOLDS, "DESKMATE_REDIS_URL": redis_server.url,
                   "DESKMATE_DATA_DIR": str(data_dir), "DESKMATE_HTTP_ADDR": "127.0.0.1:0",
                   "DESKMATE_HTTP_CALLBACK_URL": callback.url,
                   "DESKMATE_LOG_LEVEL": "ERROR"}  # fmt: skip
            rows = []
            for workers in worker_counts:
                rate = await core_rate(redis_server.url, workers, messages * 2)
                rows.append(("core", workers, rate, float("nan"), float("nan")))
            added: list[tuple[str, float, float, float]] = []
            for workers in worker_counts:
                process, url = await start_serve(env, workers)
                try:
                    await run_load(url, callback, GREETINGS, 50, f"warm{workers}", concurrency)
                    for label, texts in (("plumbing", GREETINGS), ("full", QUESTIONS)):
                        rate, lat = await run_load(
                            url, callback, texts, messages, f"{label}{workers}", concurrency
                        )
                        rows.append((label, workers, rate, percentile(lat, 0.5),
                                     percentile(lat, 0.95)))  # fmt: skip
                    if workers == worker_counts[0]:
                        for label, texts in (("plumbing", GREETINGS), ("full", QUESTIONS)):
                            e2e = await sequential_latency(url, callback, texts, 100, f"seq{label}")
                            direct = await direct_latency(redis_server.url, retriever, texts, 100)
                            p50_e2e, p50_direct = statistics.median(e2e), statistics.median(direct)
                            added.append((label, p50_e2e, p50_direct, p50_e2e - p50_direct))
                finally:
                    process.send_signal(signal.SIGTERM)
                    await process.wait()
    cpus = os.cpu_count()
    print(f"\nMessage flow, one `deskmate serve` process, quote backend, {messages} messages "
          f"per run, {concurrency} concurrent senders of traffic, {cpus} CPUs\n")  # fmt: skip
    print("core: in this process, no HTTP, no Brain; plumbing/full: through `deskmate serve`")
    print(f"{'workload':10} {'workers':>7} {'msg/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for label, workers, rate, p50, p95 in rows:
        p50_ms = "-" if math.isnan(p50) else f"{p50 * 1000:.1f}"
        p95_ms = "-" if math.isnan(p95) else f"{p95 * 1000:.1f}"
        print(f"{label:10} {workers:>7} {rate:>8.0f} {p50_ms:>8} {p95_ms:>8}")
    print("\nOne message at a time (p50): end to end vs Brain.handle called directly")
    print(f"{'workload':10} {'e2e ms':>8} {'direct ms':>10} {'added ms':>9}")
    for label, e2e_p50, direct_p50, extra in added:
        print(f"{label:10} {e2e_p50 * 1000:>8.1f} {direct_p50 * 1000:>10.1f} {extra * 1000:>9.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flow", description="Message flow.")
    parser.add_argument("--messages", type=int, default=1000, help="messages per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent HTTP senders")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    asyncio.run(measure(args.messages, args.workers, args.concurrency))


if __name__ == "__main__":
    main()
