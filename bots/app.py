"""The composition root: settings -> Redis -> retriever -> answer backend -> Brain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

from bots.indexing import ensure_index
from brain.backends import AnswerBackend, QuoteBackend
from brain.conversations import ConversationStore
from brain.model_registry import ActiveModelWatcher, ModelRegistry, backend_hook
from brain.pipeline import Brain
from brain.redis_server import open_redis
from brain.settings import Settings, SettingsError
from retrieval.embedder import Embedder
from retrieval.index import Thresholds
from retrieval.retriever import Retriever


@dataclass
class App:
    settings: Settings
    redis: aioredis.Redis
    store: ConversationStore
    retriever: Retriever
    brain: Brain
    model_watcher: ActiveModelWatcher | None = None


def make_backend(settings: Settings) -> AnswerBackend:
    if settings.model_backend == "quote":
        return QuoteBackend()
    raise SettingsError(
        f"DESKMATE_MODEL_BACKEND={settings.model_backend} is not available in this version; "
        "use quote"
    )


def threshold_overrides(settings: Settings, stored: Thresholds) -> Thresholds | None:
    if settings.answer_threshold is None and settings.clarify_threshold is None:
        return None
    answer = settings.answer_threshold if settings.answer_threshold is not None else stored.answer
    clarify = (
        settings.clarify_threshold if settings.clarify_threshold is not None else stored.clarify
    )
    if clarify > answer:
        raise SettingsError(
            f"DESKMATE_CLARIFY_THRESHOLD ({clarify}) must not exceed the answer threshold "
            f"({answer})"
        )
    return Thresholds(answer, clarify, calibrated_from="settings")


@asynccontextmanager
async def build_app(settings: Settings, show_progress: bool = True) -> AsyncIterator[App]:
    backend = make_backend(settings)
    embedder = await asyncio.to_thread(Embedder, settings.embedding_model)
    index = await asyncio.to_thread(ensure_index, settings, embedder, show_progress)
    retriever = Retriever(embedder, index, top_k=settings.top_k)
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        store = ConversationStore(
            redis,
            prefix=settings.redis_prefix,
            history_turns=settings.history_turns,
            ttl_seconds=settings.conversation_ttl,
        )
        brain = Brain(
            retriever,
            store,
            backend,
            max_message_chars=settings.max_message_chars,
            bot_name=settings.bot_name,
            thresholds=threshold_overrides(settings, index.thresholds),
        )
        watcher = ActiveModelWatcher(
            redis,
            settings.redis_prefix,
            ModelRegistry(settings.registry_dir),
            hook=backend_hook(backend),
            interval=settings.model_watch_seconds,
        )
        async with watcher:
            yield App(settings, redis, store, retriever, brain, watcher)
