"""The `openai` generator: any OpenAI-compatible server (vLLM, TGI, llama.cpp server).

Each prompt is one POST to `{url}/v1/chat/completions`; the server does its own
batching. Timeouts, connection errors, 429 and 5xx answers are retried with exponential
backoff (tenacity); other 4xx answers fail at once. Every failure surfaces as
`GenerationError`, so the answer backend falls back to quoting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from brain.answering.batching import GenerationError
from brain.answering.hf_generator import model_name
from brain.prompt import Messages

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # a conservative estimate: the server's tokenizer is not at hand


class _Retryable(GenerationError):
    """A failure worth another try: timeout, connection error, 429 or 5xx."""


@dataclass(frozen=True, slots=True)
class OpenAIOptions:
    """Where the server is and how patiently to talk to it."""

    url: str
    model: str
    api_key: str = ""
    timeout_s: float = 30.0
    attempts: int = 3
    backoff_s: float = 0.5
    max_new_tokens: int = 96
    context_tokens: int = 2048


class OpenAIGenerator:
    """Chat completions from an OpenAI-compatible HTTP server."""

    def __init__(self, options: OpenAIOptions) -> None:
        self.options = options
        self.version = f"openai:{model_name(options.model)}"
        self.context_tokens = options.context_tokens
        self._session: aiohttp.ClientSession | None = None
        self.endpoint = options.url.rstrip("/")
        if not self.endpoint.endswith("/v1"):
            self.endpoint += "/v1"

    def count_tokens(self, messages: Messages) -> int:
        """An estimate (characters / 4, plus a few tokens of chat markup per message)."""
        return sum(len(m["content"]) // CHARS_PER_TOKEN + 4 for m in messages)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json"}
            if self.options.api_key:
                headers["Authorization"] = f"Bearer {self.options.api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.options.timeout_s)
            )
        return self._session

    async def check(self) -> None:
        """Ask the server for its models once (at start): a clear error if it is down."""
        try:
            async with self._client().get(f"{self.endpoint}/models") as response:
                if response.status >= 400:
                    raise GenerationError(
                        f"the model server at {self.options.url} (DESKMATE_OPENAI_URL) "
                        f"answered {response.status} to GET /v1/models"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GenerationError(
                f"cannot reach the model server at {self.options.url} (DESKMATE_OPENAI_URL): "
                f"{exc or type(exc).__name__}"
            ) from exc

    async def generate(self, prompts: Sequence[Messages]) -> list[str]:
        return list(await asyncio.gather(*(self._complete(messages) for messages in prompts)))

    async def _complete(self, messages: Messages) -> str:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.options.attempts),
            wait=wait_exponential(multiplier=self.options.backoff_s, max=10),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post(messages)
        except _Retryable as exc:
            raise GenerationError(
                f"{exc} (gave up after {self.options.attempts} attempts)"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, messages: Messages) -> str:
        body: dict[str, Any] = {
            "model": self.options.model,
            "messages": messages,
            "max_tokens": self.options.max_new_tokens,
            "temperature": 0,
        }
        url = f"{self.endpoint}/chat/completions"
        try:
            async with self._client().post(url, json=body) as response:
                if response.status == 429 or response.status >= 500:
                    raise _Retryable(f"model server answered {response.status}")
                if response.status >= 400:
                    # Not the body: a server's error can quote the prompt (customer text).
                    raise GenerationError(f"model server answered {response.status}")
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retryable(f"model server request failed: {exc or type(exc).__name__}") from exc
        try:
            return str(payload["choices"][0]["message"]["content"] or "").strip()
        except (KeyError, IndexError, TypeError):
            # Not the reply itself: it is the model's answer, which can repeat the customer.
            raise GenerationError(
                "unexpected reply from the model server (no choices[0].message.content)"
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
