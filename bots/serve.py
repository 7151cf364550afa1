"""`deskmate serve`: the web server, the configured channels, brain workers and senders,
all in one asyncio loop. More processes on the same Redis share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any, TextIO

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from bots.app import build_app
from bots.http_channel import HttpChannel
from bots.indexing import ingest_options
from bots.staff import StaffCommands
from bots.web import make_web_app, serve_web
from brain.channel import Adapter, FeedbackHandler, Handler
from brain.conversations import ConversationStore
from brain.flow.consumer import OrderedConsumer
from brain.flow.staff_notices import STAFF_CHANNEL
from brain.flow.stream import FlowStatus, flow_status
from brain.flow.upgrade import requeue_legacy_entries
from brain.flow.wiring import Flow
from brain.flow.worker import AnswerFunction
from brain.handoff.machine import Handoffs
from brain.insights.aggregates import Insights
from brain.keys import RedisKeys
from brain.polling import Poller
from brain.redis_server import describe_url, open_redis, pool_size
from brain.retention import Retention
from brain.settings import Settings
from brain.types import Inbound
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5.0
SHUTDOWN_GRACE_SECONDS = 10.0


def build_channels(
    settings: Settings,
    on_message: Handler,
    on_feedback: FeedbackHandler,
    redis: aioredis.Redis,
    staff: StaffCommands | None = None,
) -> list[Adapter]:
    """The channels whose credentials are set. A new channel adds its lines here.

    `check_channels` has vetted the settings before anything was loaded.
    """
    channels: list[Adapter] = []
    if settings.telegram_token:
        from bots.telegram import adapter as telegram  # loads python-telegram-bot: only when used

        channels.append(telegram.TelegramAdapter(settings, on_message, on_feedback, redis=redis))
    if settings.slack_bot_token:
        from bots.slack import adapter as slack

        slack_adapter = slack.SlackAdapter(
            settings, on_message, on_feedback, redis=redis, staff=staff
        )
        channels.append(slack_adapter)
        if slack_adapter.desk is not None:
            channels.append(slack_adapter.desk)  # the support team's side of handoffs
    if settings.http_callback_url:
        channels.append(
            HttpChannel(settings.http_callback_url, on_message, token=str(settings.http_token))
        )
    return channels


def bounded_handler(on_message: Handler, max_chars: int) -> Handler:
    """`on_message` for messages as they may be stored (`Inbound.bounded`): a 1 MB message
    enters Redis as the first `max_chars` characters the brain reads, marked as cut, and
    a string a broken client cut mid-emoji cannot make Redis refuse the message."""

    async def bounded(inbound: Inbound) -> None:
        await on_message(inbound.bounded(max_chars))

    return bounded


def check_channels(settings: Settings) -> None:
    """Fail at once, naming the setting to fix, when a channel is half-configured."""
    if settings.telegram_token or settings.telegram_webhook_url:
        from bots.telegram import adapter as telegram

        telegram.check_settings(settings)
    if settings.slack_bot_token or settings.slack_app_token or settings.slack_signing_secret:
        from bots.slack import adapter as slack

        slack.check_settings(settings)


def handoffs_posted(settings: Settings) -> bool:
    """Whether handoffs are posted to the support team (a Slack staff channel is set)."""
    return bool(settings.slack_staff_channel and settings.slack_bot_token)


def describe_handoffs(settings: Settings) -> str:
    """The start line saying where handoffs go."""
    if handoffs_posted(settings):
        return f"handoffs: posted to Slack channel {settings.slack_staff_channel}"
    return (
        "handoffs: not posted anywhere; the bot stays quiet until the customer sends /reset "
        "(set DESKMATE_SLACK_STAFF_CHANNEL to post them to a Slack channel)"
    )


async def build_dashboard(
    settings: Settings, redis: aioredis.Redis, retriever: Retriever
) -> web.Application:
    """The staff dashboard, served at /dashboard when a staff password hash is set."""
    from bots.dashboard.approvals import Approvals
    from bots.dashboard.auth import Sessions
    from bots.dashboard.pages import Dashboard, dashboard_secret, make_dashboard

    prefix = settings.redis_prefix
    secret = await dashboard_secret(redis, prefix, str(settings.dashboard_secret))
    return make_dashboard(
        Dashboard(
            redis,
            prefix,
            str(settings.dashboard_password_hash),
            Sessions(secret, settings.dashboard_session),
            Insights(redis, prefix, settings.resolved_window),
            Approvals(
                redis,
                prefix,
                retriever,
                settings.index_dir,
                settings.data_dir,
                ingest_options(settings),
            ),
        )
    )


def describe_retention(settings: Settings) -> str:
    """The start line saying how long customers' words are kept."""
    if settings.retention_days:
        return (
            f"retention: transcripts older than {settings.retention_days} days are deleted "
            "(DESKMATE_RETENTION_DAYS; 0 keeps them; `deskmate transcripts export` first)"
        )
    return "retention: transcripts kept until the stream's size cap (DESKMATE_RETENTION_DAYS=0)"


def process_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def serve(settings: Settings, workers: int, senders: int, out: TextIO = sys.stdout) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 if a worker or sender crashed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    check_channels(settings)  # before the models load
    if not settings.redis_max_connections:
        settings = replace(settings, redis_max_connections=pool_size(workers, senders))
    keys = RedisKeys(settings.redis_prefix)
    name = process_name()
    async with AsyncExitStack() as stack:
        on_feedback: FeedbackHandler
        answer: AnswerFunction | None = None
        staff: StaffCommands | None = None
        if workers:
            app = await stack.enter_async_context(build_app(settings, show_progress=False))
            redis, answer, on_feedback = app.redis, app.brain.handle, app.brain.feedback
            staff = StaffCommands(
                app.retriever,
                redis,
                prefix=settings.redis_prefix,
                index_dir=settings.index_dir,
                backend_version=app.brain.backend.version,
                faq_files=settings.faq or (),
                options=ingest_options(settings),
            )
        else:
            redis = await stack.enter_async_context(
                open_redis(
                    settings.redis_url,
                    settings.data_dir,
                    wait_replicas=settings.redis_wait_replicas,
                    max_connections=settings.redis_max_connections,
                    pool_timeout=settings.redis_pool_timeout,
                )
            )
            on_feedback = ConversationStore(redis, settings.redis_prefix).record_feedback
        if settings.retention_days:
            await stack.enter_async_context(Retention(redis, keys, settings.retention_days))
        await requeue_legacy_entries(redis, keys)  # left by an earlier version: before intake
        await Handoffs(redis, settings.redis_prefix).index_earlier_records()  # their handoffs
        flow = Flow(
            redis,
            keys,
            name=name,
            lock_timeout=settings.lock_timeout,
            reclaim_idle=settings.reclaim_idle,
        )
        on_message = bounded_handler(flow.intake.handler, settings.max_message_chars)
        channels = build_channels(settings, on_message, on_feedback, redis, staff)
        for channel in channels:
            await stack.enter_async_context(channel)
        routes = [route for channel in channels for route in channel.web_routes()]
        dashboard = None
        if workers and settings.dashboard_password_hash:
            dashboard = await build_dashboard(settings, redis, app.retriever)
        web_app = make_web_app(
            routes,
            redis=redis,
            keys=keys,
            metrics_token=str(settings.metrics_token),
            dashboard=dashboard,
        )
        port = await stack.enter_async_context(serve_web(web_app, settings.http_addr))
        host = settings.http_addr.rpartition(":")[0]

        adapters = {channel.channel: channel for channel in channels}
        tasks = flow.start(
            answer,
            adapters,
            workers=workers,
            senders=senders,
            stop=stop,
            staff_channel=STAFF_CHANNEL if handoffs_posted(settings) else None,
            streaming=app.brain.handle if workers and settings.stream_replies else None,
            show_partials=settings.stream_replies,
        )
        sender_count = len(flow.senders)
        names = ", ".join(adapters) or (
            "none (set DESKMATE_TELEGRAM_TOKEN, DESKMATE_SLACK_BOT_TOKEN or "
            "DESKMATE_HTTP_CALLBACK_URL)"
        )
        where = describe_url(settings.redis_url) if settings.redis_url else "embedded"
        print(f"deskmate serve: listening on http://{host}:{port}", file=out)
        print(f"channels: {names}", file=out)
        print(
            f"{workers} brain workers, {sender_count} senders; Redis {where}; process {name}",
            file=out,
        )
        if workers:
            print(f"answering with {app.brain.backend.version}", file=out)
        print(describe_handoffs(settings), file=out)
        print(describe_retention(settings), file=out, flush=True)
        info = {
            "name": name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "workers": workers,
            "senders": sender_count,
            "channels": list(adapters),
            "started": time.time(),
        }
        tasks.append(asyncio.create_task(_heartbeat(redis, keys, info, flow.consumers, stop)))
        if settings.fold_seconds:
            fold = Poller(
                Insights(redis, settings.redis_prefix, settings.resolved_window).update,
                settings.fold_seconds,
                "insights-fold",
            )
            fold.start()  # one process folds at a time (the fold's own lock)
            stack.push_async_callback(fold.stop)
        return await _until_stopped(stop, tasks, out)


async def _until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]], out: TextIO) -> int:
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is not stopping and task.exception() is not None:
            log.error("%s crashed", task.get_name(), exc_info=task.exception())
            code = 1
    stop.set()
    print("deskmate serve: stopping (finishing messages in hand)", file=out, flush=True)
    _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stopping.cancel()
    return code


async def _heartbeat(
    redis: aioredis.Redis,
    keys: RedisKeys,
    info: dict[str, object],
    consumers: list[OrderedConsumer[Any]],
    stop: asyncio.Event,
) -> None:
    """Keep `process:{name}` alive while this process runs; it expires if we die."""
    key = keys.process(str(info["name"]))
    while not stop.is_set():
        info["finished"] = sum(c.finished for c in consumers)
        with contextlib.suppress(RedisError, OSError):
            await redis.set(key, json.dumps(info), ex=int(HEARTBEAT_SECONDS * 3))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)
    with contextlib.suppress(RedisError, OSError):
        await redis.delete(key)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def format_status(status: FlowStatus, now: float | None = None) -> str:
    """The `deskmate status` table."""
    now = time.time() if now is None else now
    lines = [f"{'queue':8} {'unfinished':>10} {'pending':>8} {'oldest':>8}"]
    for stream in status.streams:
        lines.append(
            f"{stream.name:8} {stream.length:>10} {stream.pending:>8} {_age(stream.oldest_age):>8}"
        )
    lines.append("")
    lines.append(
        f"processes alive: {len(status.processes)} "
        f"({status.workers} brain workers, {status.senders} senders)"
    )
    for process in status.processes:
        channels = ",".join(process.get("channels", [])) or "-"
        up = _age(now - float(process.get("started", now)))
        lines.append(
            f"  {process.get('name')}: {process.get('workers')} workers, "
            f"{process.get('senders')} senders, channels {channels}, up {up}, "
            f"{process.get('finished', 0)} entries finished"
        )
    lines.append(f"active model: {status.model_version or '(unset)'}")
    return "\n".join(lines)


async def show_status(settings: Settings, out: TextIO = sys.stdout) -> int:
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        status = await flow_status(redis, RedisKeys(settings.redis_prefix))
    print(format_status(status), file=out)
    return 0
