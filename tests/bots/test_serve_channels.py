"""`deskmate serve` as users run it: Telegram and Slack at once, through the durable flow.

One real process (real python-telegram-bot and slack-bolt clients, real embedded Redis)
talks to the fake Telegram and Slack servers of the channel tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from bots.web import serve_web
from brain.redis_server import EmbeddedRedis
from tests.fakes.slack import FakeSlack, signed_headers
from tests.fakes.telegram import FakeTelegram, text_message

DESKMATE = str(Path(sys.executable).with_name("deskmate"))
SECRET = "serve-test-signing-secret"


def signed_event(event: dict[str, object], event_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "token": "legacy",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": event,
        }
    )
    return body.encode(), signed_headers(body, SECRET)


async def test_serve_answers_telegram_and_slack_once_each(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, tmp_path: Path
) -> None:
    fake_slack = FakeSlack()
    async with (
        FakeTelegram() as telegram,
        serve_web(fake_slack.app(), "127.0.0.1:0") as slack_port,
    ):
        fake_slack.url = f"http://127.0.0.1:{slack_port}"
        env = {
            **os.environ,
            "DESKMATE_DATA_DIR": str(tmp_path),
            "DESKMATE_REDIS_URL": redis_server.url,
            "DESKMATE_HTTP_ADDR": "127.0.0.1:0",
            "DESKMATE_TELEGRAM_TOKEN": telegram.token,
            "DESKMATE_TELEGRAM_API_URL": telegram.url,
            "DESKMATE_SLACK_BOT_TOKEN": fake_slack.token,
            "DESKMATE_SLACK_SIGNING_SECRET": SECRET,
            "DESKMATE_SLACK_API_URL": f"{fake_slack.url}/api",
        }
        process = await asyncio.create_subprocess_exec(
            DESKMATE, "serve", "--workers", "2", "--senders", "2",
            env=env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            first = await asyncio.wait_for(process.stdout.readline(), timeout=180)
            assert b"listening on" in first, first
            port = int(first.decode().rsplit(":", 1)[1])
            channels = (await process.stdout.readline()).decode()
            assert "telegram" in channels and "slack" in channels

            # Telegram: a customer's question, delivered twice (a redelivery after restart).
            update = telegram.push(text_message("how long do I have to return an item?"))
            telegram.push(dict(update))
            [answer] = await telegram.wait_for_messages(1, timeout=60)
            assert "30 days" in answer["text"]
            assert answer["parse_mode"] == "HTML"

            # Slack: a signed DM event, then Slack's retry of the same event.
            event = {
                "type": "message",
                "channel_type": "im",
                "channel": "D9",
                "user": "U1",
                "text": "how do I reset my password?",
                "ts": "1700000000.000100",
            }
            body, headers = signed_event(event, "Ev0001")
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/slack/events"
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 200
                retry = {**headers, "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"}
                async with session.post(url, data=body, headers=retry) as response:
                    assert response.status == 200
            await fake_slack.wait_for(lambda: bool(fake_slack.payloads("chat.update")), 60)
            [update_payload] = fake_slack.payloads("chat.update")
            assert "password" in update_payload["text"].lower()

            await asyncio.sleep(1.0)  # anything answered twice would have arrived by now
            assert len(telegram.sent("sendMessage")) == 1
            assert len(fake_slack.payloads("chat.update")) == 1
            assert await redis.xlen("dm:inbox") == 0  # every accepted message was finished
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout=30) == 0
