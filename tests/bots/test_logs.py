"""No customer text and no secret in the logs, at any level, from deskmate or a library.

One real `deskmate serve` at DESKMATE_LOG_LEVEL=DEBUG with every channel (Telegram and
Slack against their fakes, the http channel) and an OpenAI-compatible model server that
fails in the ways that used to put text into the log; marked messages go through each,
including a Slack request with a bad signature and a follow-up question; then the whole
log is searched for the marks and the secrets.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.console import run_console
from bots.logs import BODY_LOGGING_LIBRARIES, LibraryFloor, setup_logging
from bots.web import serve_web
from brain.pipeline import Brain
from brain.redis_server import EmbeddedRedis
from brain.settings import Settings
from tests.fakes.callback_server import CallbackServer
from tests.fakes.openai import FakeOpenAI, fake_openai_server
from tests.fakes.slack import FakeSlack, signed_headers
from tests.fakes.telegram import FakeTelegram, text_message

ROOT = Path(__file__).resolve().parents[2]  # this checkout's code, whatever is installed
MARK = "zq7marked"  # in every customer message; must appear nowhere in the log
SIGNING_SECRET = "log-test-signing-secret-1234"
HTTP_TOKEN = "log-test-http-token-5678"


def slack_event(text: str, event_id: str) -> str:
    event = {
        "type": "message",
        "channel_type": "im",
        "channel": "D7",
        "user": "U7",
        "text": text,
        "ts": f"{time.time():.6f}",
    }
    envelope = {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "event": event,
    }
    return json.dumps(envelope)


async def wait_until(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_serve_at_debug_logs_no_customer_text_and_no_secret(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, tmp_path: Path
) -> None:
    fake_slack = FakeSlack()
    # The first answer fails with an error quoting the prompt, the second with a reply
    # that is not a completion: both used to be logged with the text.
    model = FakeOpenAI(reply=lambda messages: f"{MARK} See [1].", statuses=[400], malformed=1)
    async with (
        FakeTelegram() as telegram,
        serve_web(fake_slack.app(), "127.0.0.1:0") as slack_port,
        CallbackServer() as callback,
        fake_openai_server(model),
    ):
        fake_slack.url = f"http://127.0.0.1:{slack_port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DESKMATE_DATA_DIR": str(tmp_path),
            "DESKMATE_REDIS_URL": redis_server.url,
            "DESKMATE_HTTP_ADDR": "127.0.0.1:0",
            "DESKMATE_LOG_LEVEL": "DEBUG",
            "DESKMATE_MODEL_BACKEND": "openai",
            "DESKMATE_OPENAI_URL": model.url,
            "DESKMATE_OPENAI_ATTEMPTS": "1",
            # The sample's answers are long: the model is asked only when none is quoted whole.
            "DESKMATE_QUOTE_OVER_WORDS": "0",
            "DESKMATE_TELEGRAM_TOKEN": telegram.token,
            "DESKMATE_TELEGRAM_API_URL": telegram.url,
            "DESKMATE_SLACK_BOT_TOKEN": fake_slack.token,
            "DESKMATE_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "DESKMATE_SLACK_API_URL": f"{fake_slack.url}/api",
            "DESKMATE_HTTP_CALLBACK_URL": callback.url,
            "DESKMATE_HTTP_TOKEN": HTTP_TOKEN,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots.cli", "serve", "--workers", "1", "--senders", "2",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        log = asyncio.create_task(process.stderr.read())
        try:
            first = await asyncio.wait_for(process.stdout.readline(), timeout=180)
            assert b"listening on" in first, first
            port = int(first.decode().rsplit(":", 1)[1])

            # http: a question with an e-mail address, then a follow-up in the same chat.
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/v1/messages"
                auth = {"Authorization": f"bearer {HTTP_TOKEN}"}
                for number, text in enumerate(
                    [f"how do I track my parcel? {MARK}@example.com", f"and returns? {MARK}"]
                ):
                    body = {"conversation_id": "c1", "user_id": "u1",
                            "message_id": f"m{number}", "text": text}  # fmt: skip
                    async with session.post(url, json=body, headers=auth) as response:
                        assert response.status == 202
                    await wait_until(lambda n=number: len(callback.received) > n)

                # Slack: a signed DM, and a forged one (its body used to be logged).
                events = f"http://127.0.0.1:{port}/slack/events"
                forged = slack_event(f"forged {MARK}", "EvLOG2")
                headers = signed_headers(forged, "not-the-secret", "application/json")
                async with session.post(events, data=forged, headers=headers) as response:
                    assert response.status == 401
                signed = slack_event(f"how do I reset my password? {MARK}", "EvLOG1")
                headers = signed_headers(signed, SIGNING_SECRET, "application/json")
                async with session.post(events, data=signed, headers=headers) as response:
                    assert response.status == 200
            await fake_slack.wait_for(lambda: bool(fake_slack.payloads("chat.update")), 60)

            # Telegram: a customer's message through long polling.
            telegram.push(text_message(f"how long do I have to return an item? {MARK}"))
            await telegram.wait_for_messages(1, timeout=60)
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=30)
        text = (await log).decode("utf-8", errors="replace")
    assert code == 0, text[-3000:]
    assert " DEBUG " in text and " INFO " in text  # it did log at DEBUG
    assert "generation failed" in text  # both model failures were logged...
    assert MARK not in text
    for secret in (telegram.token, fake_slack.token, SIGNING_SECRET, HTTP_TOKEN):
        assert secret not in text


async def test_the_console_at_debug_logs_no_customer_text(
    brain: Brain, capfd: pytest.CaptureFixture[str]
) -> None:
    setup_logging(Settings(log_level="DEBUG"))
    try:
        lines = [f"my e-mail is {MARK}@example.com", f"and how do I track it? {MARK}", "/human"]
        out = io.StringIO()
        await run_console(brain, io.StringIO("\n".join(lines) + "\n"), out, prompt=False)
        logging.getLogger("brain.pipeline").debug("the console ran")  # the log is on
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    assert "support team" in out.getvalue()  # every line was answered
    err = capfd.readouterr().err
    assert "the console ran" in err and MARK not in err


@pytest.mark.parametrize("name", [*BODY_LOGGING_LIBRARIES, "slack_bolt.AsyncApp", "deskmate:X"])
def test_libraries_are_held_to_warning_whatever_their_level(name: str) -> None:
    floor = LibraryFloor(BODY_LOGGING_LIBRARIES)

    def record(level: int, logger: str = name) -> logging.LogRecord:
        return logging.LogRecord(logger, level, __file__, 1, f"body {MARK}", None, None)

    assert not floor.filter(record(logging.INFO)) and not floor.filter(record(logging.DEBUG))
    assert floor.filter(record(logging.WARNING))
    assert floor.filter(record(logging.DEBUG, "brain.pipeline"))
    assert floor.filter(record(logging.DEBUG, "telegramx"))  # only the library's own names
