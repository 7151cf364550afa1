"""Chaos benchmark: what outside failures do to the message flow, measured at the receiver.

Two `deskmate serve` processes (http channel, quote backend, started as `bench.flow`
starts them) share one Redis and one callback receiver. A load generator sends each
conversation's messages in order, to either process, and like a well-behaved platform
sends a message again until it is accepted (a 503, a refused connection, or no answer in
2 s from a paused process). Each scenario then waits for every reply and counts:

- sent: distinct messages accepted; answered: distinct messages that got a reply;
- lost: sent and never answered;
- duplicated: extra copies of a reply; of those, *marked* ones came with
  `"redelivery": true` (the sender knew an earlier call was cut mid-flight), and
  *unexplained* ones did not (a bug);
- out of order: replies that arrived after the reply to a later message of the same
  conversation.

Scenarios: crash (SIGKILL of a process during slow callbacks, then a restart), pause
(SIGSTOP past the lock timeout during slow callbacks, then SIGCONT), Redis outage (stopped
and started on its AOF), Redis restarted empty (its data wiped), platform retries (every
message delivered 3 times, to both processes), slow callbacks (0.5 s each), a slow model
(DESKMATE_ANSWER_DELAY: each answer takes 3 s; several messages in a row per conversation,
each must be answered within 3 s x its position + slack, not after a reclaim) and a burst
(2,000 messages posted at once).

The processes run with DESKMATE_RECLAIM_IDLE=5 and DESKMATE_LOCK_TIMEOUT=2 so that work
left by a killed process is taken over within seconds (the defaults are 60 and 10: the
same happens, a minute later).

    .venv/bin/python -m bench.chaos [--full] [--only crash pause ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.flow import GREETINGS, QUESTIONS, THRESHOLDS, start_serve
from bots.indexing import import_faq
from brain.redis_server import EmbeddedRedis
from brain.settings import SAMPLE_FAQ
from retrieval.embedder import Embedder
from tests.fakes.callback_server import CallbackServer

ROOT = Path(__file__).resolve().parent.parent
RECLAIM_IDLE = 5.0
LOCK_TIMEOUT = 2.0
POST_TIMEOUT = 2.0
ANSWER_DELAY = 3.0  # the slow model's seconds per answer
ANSWER_SLACK = 3.0  # what a reply may take beyond them (queueing, a loaded machine)


@dataclass
class Row:
    scenario: str
    sent: int = 0
    answered: int = 0
    lost: int = 0
    duplicated: int = 0
    marked: int = 0
    out_of_order: int = 0
    refused: int = 0  # POSTs answered 503 (Redis unavailable), then sent again
    unanswered: int = 0  # POSTs refused a connection or not answered in time, sent again
    seconds: float = 0.0
    late: int = 0  # replies later than the scenario allows (the slow model's bound)
    note: str = ""

    @property
    def unexplained(self) -> int:
        return self.duplicated - self.marked


@dataclass
class Cluster:
    """The Redis server, the receiver and the `deskmate serve` processes."""

    redis: EmbeddedRedis
    callback: CallbackServer
    env: dict[str, str]
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    base_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base_env = dict(self.env)

    async def start(self, count: int = 2) -> None:
        started = await asyncio.gather(*(start_serve(self.env, 2) for _ in range(count)))
        for process, url in started:
            self.processes.append(process)
            self.urls.append(url)

    async def restart(self, index: int) -> None:
        process, url = await start_serve(self.env, 2)
        self.processes[index], self.urls[index] = process, url

    async def reconfigure(self, **settings: str) -> None:
        """Stop the processes and start as many with `settings` over the base ones."""
        count = len(self.processes)
        await self.stop()
        self.processes, self.urls = [], []
        self.env = {**self.base_env, **settings}
        await self.start(count)

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                with _quiet():
                    os.kill(process.pid, signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            await asyncio.wait_for(process.wait(), 60)


class _quiet:
    """Ignore a process that is gone already."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *rest: object) -> bool:
        return kind is ProcessLookupError


class Load:
    """Sends conversations' messages in order, again until accepted; remembers them."""

    def __init__(
        self,
        cluster: Cluster,
        tag: str,
        timeout: float = POST_TIMEOUT,
        texts: Sequence[str] = GREETINGS,
    ) -> None:
        self.cluster = cluster
        self.tag = tag
        self.texts = list(texts)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.sent: dict[str, list[str]] = {}  # conversation -> message ids, in order
        self.accepted: dict[str, float] = {}  # message id -> when it was accepted (epoch s)
        self.refused = 0
        self.unanswered = 0

    async def conversation(
        self, session: aiohttp.ClientSession, number: int, messages: int, *, copies: int = 1,
        pause: float = 0.0,
    ) -> None:  # fmt: skip
        conversation = f"{self.tag}-c{number}"
        ids = self.sent.setdefault(conversation, [])
        for n in range(messages):
            message_id = f"{conversation}-m{n}"
            for copy in range(copies):  # a platform delivering the same message again
                await self._post(session, conversation, message_id, start=number + copy)
            ids.append(message_id)
            if pause:
                await asyncio.sleep(pause)

    async def _post(
        self, session: aiohttp.ClientSession, conversation: str, message_id: str, start: int
    ) -> None:
        texts = self.texts
        body = {"conversation_id": conversation, "user_id": "u", "message_id": message_id,
                "text": texts[hash(message_id) % len(texts)]}  # fmt: skip
        attempt = start
        while True:
            url = self.cluster.urls[attempt % len(self.cluster.urls)]
            attempt += 1
            try:
                async with session.post(url, json=body, timeout=self.timeout) as response:
                    if response.status == 202:
                        self.accepted.setdefault(message_id, time.time())
                        return
                    assert response.status == 503, response.status
                    self.refused += 1
            except (aiohttp.ClientError, TimeoutError):
                self.unanswered += 1
            await asyncio.sleep(0.05)

    async def run(
        self, conversations: int, messages: int, *, copies: int = 1, pause: float = 0.0
    ) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(
                *(
                    self.conversation(session, n, messages, copies=copies, pause=pause)
                    for n in range(conversations)
                )
            )


async def settle(cluster: Cluster, load: Load, started: float, scenario: str) -> Row:
    """Wait for every reply (or the deadline), then count."""
    expected = {m for ids in load.sent.values() for m in ids}
    deadline = time.monotonic() + 4 * RECLAIM_IDLE + 60

    def replies() -> list[dict[str, object]]:
        prefix = f"{load.tag}-"
        return [
            r.body
            for r in cluster.callback.received
            if str(r.body["conversation_id"]).startswith(prefix)
        ]

    while {str(b["in_reply_to"]) for b in replies()} < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    seconds = time.monotonic() - started
    await asyncio.sleep(2 * LOCK_TIMEOUT)  # a late duplicate would arrive now
    bodies = replies()
    answered = {str(b["in_reply_to"]) for b in bodies}
    row = Row(scenario, sent=len(expected), answered=len(answered & expected),
              refused=load.refused, unanswered=load.unanswered, seconds=seconds)  # fmt: skip
    row.lost = len(expected - answered)
    row.duplicated = len(bodies) - len(answered)
    row.marked = sum(1 for b in bodies if b.get("redelivery"))
    position = {m: n for ids in load.sent.values() for n, m in enumerate(ids)}
    latest: dict[str, int] = {}
    for body in bodies:
        conversation, message = str(body["conversation_id"]), str(body["in_reply_to"])
        index = position.get(message, -1)
        if index < latest.get(conversation, -1):
            row.out_of_order += 1
        latest[conversation] = max(index, latest.get(conversation, -1))
    return row


Scenario = Callable[[Cluster, bool], Awaitable[Row]]


async def crash(cluster: Cluster, full: bool) -> Row:
    cluster.callback.delay = 0.5  # slow receiver: calls are in flight when the kill comes
    load = Load(cluster, "crash")
    started = time.monotonic()
    traffic = asyncio.create_task(load.run(20, 40 if full else 20, pause=0.15))
    for _ in range(3 if full else 1):
        await asyncio.sleep(1.0)
        cluster.processes[0].kill()
        await cluster.processes[0].wait()
        await cluster.restart(0)
    await traffic
    row = await settle(cluster, load, started, "crash (SIGKILL + restart)")
    cluster.callback.delay = 0.0
    row.note = f"{3 if full else 1} kill(s) during 0.5 s callbacks"
    return row


async def pause(cluster: Cluster, full: bool) -> Row:
    cluster.callback.delay = 0.5
    load = Load(cluster, "pause")
    started = time.monotonic()
    traffic = asyncio.create_task(load.run(20, 40 if full else 20, pause=0.15))
    await asyncio.sleep(1.0)
    stopped = 15.0 if full else 3 * LOCK_TIMEOUT
    os.kill(cluster.processes[0].pid, signal.SIGSTOP)
    await asyncio.sleep(stopped)
    os.kill(cluster.processes[0].pid, signal.SIGCONT)
    await traffic
    row = await settle(cluster, load, started, "pause (SIGSTOP/SIGCONT)")
    cluster.callback.delay = 0.0
    row.note = f"stopped {stopped:g} s, lock timeout {LOCK_TIMEOUT:g} s, 0.5 s callbacks"
    return row


async def redis_outage(cluster: Cluster, full: bool) -> Row:
    load = Load(cluster, "outage")
    started = time.monotonic()
    traffic = asyncio.create_task(load.run(20, 20 if full else 10, pause=0.1))
    await asyncio.sleep(1.0)
    cluster.redis.stop()  # SIGTERM: Redis writes its AOF and exits
    await asyncio.sleep(5.0 if full else 3.0)
    cluster.redis.start()  # the same directory: the AOF brings the queues back
    await traffic
    row = await settle(cluster, load, started, "Redis outage")
    row.note = f"down {5.0 if full else 3.0:g} s, restarted on its AOF"
    return row


async def redis_empty(cluster: Cluster, full: bool) -> Row:
    """Redis comes back with no data (a failover to an empty replica, a flushed cache).
    What it held is gone by definition, so the wipe comes between two waves of traffic
    once the first is answered; the second wave must be answered as well."""
    before = Load(cluster, "empty")
    await before.run(10, 2)
    first = await settle(cluster, before, time.monotonic(), "")
    process = cluster.redis._process
    assert process is not None
    process.kill()  # no AOF rewrite on the way out
    process.wait()
    cluster.redis._process = None
    for child in cluster.redis.directory.iterdir():
        if child.name.startswith(("appendonly", "dump")):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    cluster.redis.start()
    load = Load(cluster, "wiped")
    started = time.monotonic()
    await load.run(20 if full else 10, 5, pause=0.05)
    row = await settle(cluster, load, started, "Redis restarted empty")
    row.note = f"counts the messages sent after the wipe ({first.answered} answered before)"
    return row


async def platform_retries(cluster: Cluster, full: bool) -> Row:
    load = Load(cluster, "retries")
    started = time.monotonic()
    await load.run(20, 10 if full else 5, copies=3)
    row = await settle(cluster, load, started, "platform retries (x3)")
    row.note = "each message POSTed 3 times, alternating processes"
    return row


async def slow_callbacks(cluster: Cluster, full: bool) -> Row:
    cluster.callback.delay = 0.5
    load = Load(cluster, "slow")
    started = time.monotonic()
    await load.run(20, 10 if full else 5)
    row = await settle(cluster, load, started, "slow callbacks (0.5 s)")
    cluster.callback.delay = 0.0
    row.note = "8 senders in all"
    return row


async def slow_model(cluster: Cluster, full: bool) -> Row:
    """Each answer takes ANSWER_DELAY (a slow model); each conversation sends several
    messages in a row. The flow answers them one after the other: message k (from 0) of
    a conversation is answered within (k + 1) x ANSWER_DELAY + ANSWER_SLACK of the
    conversation's first message. The processes run with the default reclaim time (60 s),
    so a message left waiting behind a live worker would show as a minute late."""
    await cluster.reconfigure(DESKMATE_ANSWER_DELAY=str(ANSWER_DELAY), DESKMATE_RECLAIM_IDLE="60")
    try:
        # As many conversations as brain workers (2 processes x 2): each can be answered
        # at the model's pace; more would queue behind one another.
        load = Load(cluster, "model", texts=QUESTIONS)
        started = time.monotonic()
        await load.run(4, 8 if full else 5, pause=0.1)
        row = await settle(cluster, load, started, f"slow model ({ANSWER_DELAY:g} s)")
    finally:
        await cluster.reconfigure()
    first_reply: dict[str, float] = {}
    for received in cluster.callback.received:
        message = str(received.body["in_reply_to"])
        first_reply.setdefault(message, received.time)
    worst = 0.0
    for ids in load.sent.values():
        opened = load.accepted[ids[0]]
        for position, message in enumerate(ids):
            allowed = (position + 1) * ANSWER_DELAY + ANSWER_SLACK
            taken = first_reply.get(message, float("inf")) - opened
            worst = max(worst, taken - (position + 1) * ANSWER_DELAY)
            row.late += taken > allowed
    row.note = (
        f"{len(load.sent)} conversations x {len(next(iter(load.sent.values())))} messages; "
        f"latest reply {worst:.1f} s after (position x {ANSWER_DELAY:g} s), "
        f"{row.late} later than {ANSWER_SLACK:g} s"
    )
    return row


async def burst(cluster: Cluster, full: bool) -> Row:
    load = Load(cluster, "burst", timeout=120)
    started = time.monotonic()
    await load.run(2000, 1)
    accepted = time.monotonic() - started
    row = await settle(cluster, load, started, "burst of 2,000")
    row.note = f"all accepted in {accepted:.1f} s"
    return row


SCENARIOS: dict[str, Scenario] = {
    "crash": crash,
    "pause": pause,
    "outage": redis_outage,
    "empty": redis_empty,
    "retries": platform_retries,
    "slow": slow_callbacks,
    "model": slow_model,
    "burst": burst,
}


async def measure(names: Sequence[str], full: bool) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        import_faq(data_dir / "index", [SAMPLE_FAQ], Embedder(), show_progress=False)
        with EmbeddedRedis(Path(tmp) / "redis") as redis_server:
            async with CallbackServer() as callback:
                env = {**os.environ, **THRESHOLDS, "DESKMATE_REDIS_URL": redis_server.url,
                       "DESKMATE_DATA_DIR": str(data_dir), "DESKMATE_HTTP_ADDR": "127.0.0.1:0",
                       "DESKMATE_HTTP_CALLBACK_URL": callback.url,
                       "DESKMATE_MODEL_BACKEND": "quote",
                       "DESKMATE_RECLAIM_IDLE": str(RECLAIM_IDLE),
                       "DESKMATE_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
                       "DESKMATE_LOG_LEVEL": "ERROR",
                       # the processes run this checkout's code, whichever one the
                       # `deskmate` script was installed from
                       "PYTHONPATH": str(ROOT)}  # fmt: skip
                cluster = Cluster(redis_server, callback, env)
                await cluster.start()
                try:
                    for name in names:
                        row = await SCENARIOS[name](cluster, full)
                        print(format_row(row), flush=True)
                        rows.append(row)
                finally:
                    await cluster.stop()
    return rows


HEADER = (
    f"{'scenario':28} {'sent':>5} {'answered':>8} {'lost':>4} {'dup':>4} {'marked':>6} "
    f"{'unexpl':>6} {'order':>5} {'503':>5} {'no-ans':>6} {'s':>6}  note"
)


def format_row(row: Row) -> str:
    return (
        f"{row.scenario:28} {row.sent:>5} {row.answered:>8} {row.lost:>4} {row.duplicated:>4} "
        f"{row.marked:>6} {row.unexplained:>6} {row.out_of_order:>5} {row.refused:>5} "
        f"{row.unanswered:>6} "
        f"{row.seconds:>6.1f}  {row.note}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--full", action="store_true", help="the full-size run (longer, 3 kills)")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"Chaos: 2 `deskmate serve` processes (2 workers, 4 senders each), quote backend, "
          f"{os.cpu_count()} CPUs; dup = extra copies, marked = sent as a redelivery, "
          f"unexpl = dup - marked, order = out of order; POSTs sent again after a 503 or after no "
          f"answer (a dead or paused process)\n")  # fmt: skip
    print(HEADER, flush=True)
    rows = asyncio.run(measure(args.only, args.full))
    bad = [r for r in rows if r.lost or r.out_of_order or r.unexplained or r.late]
    if bad:
        print(f"\nFAILED: {', '.join(r.scenario for r in bad)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
