"""A small OpenAI-compatible server (aiohttp, port 0) that records what it is sent.

`reply` decides each answer from the request's messages; `statuses` scripts failures
(one status per request, then 200s; like real servers' validation errors, the error
quotes the end of the last message); `malformed` answers that many requests with a 200 that is not
a chat completion (it echoes the last message); `delay_s` makes it slow, for timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bots.web import serve_web


@dataclass
class FakeOpenAI:
    reply: Callable[[list[dict[str, str]]], str] = lambda messages: "See [1]."
    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    malformed: int = 0
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "tiny-model"}]})

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, dict(request.headers), body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.statuses:
            status = self.statuses.pop(0)
            if status != 200:
                last = body["messages"][-1]["content"][-80:]
                message = f"the request ended with: {last}"
                return web.json_response({"error": {"message": message}}, status=status)
        if self.malformed:
            self.malformed -= 1
            return web.json_response({"unexpected": body["messages"][-1]["content"][-80:]})
        content = self.reply(body["messages"])
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
            }
        )


@asynccontextmanager
async def fake_openai_server(fake: FakeOpenAI) -> AsyncIterator[FakeOpenAI]:
    async with serve_web(fake.app(), "127.0.0.1:0") as port:
        fake.url = f"http://127.0.0.1:{port}"
        yield fake
