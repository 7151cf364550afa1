"""The composition root: settings -> Redis -> retriever -> answer backend -> Brain."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bots.faq_sync import FaqWatcher, SourceSync
from bots.indexing import ensure_index, ingest_options
from bots.retrieval_models import (
    active_version,
    embedder_for,
    learn_sample_on_first_run,
    retriever_watcher,
)
from brain import compute
from brain.answering.attribution import drawn_on
from brain.answering.backends import AnswerBackend, DelayedBackend, QuoteBackend
from brain.answering.batching import BatchingOptions, GenerationError, Generator
from brain.answering.grounded import Attribution, GenerativeBackend, UnavailableModelBackend
from brain.answering.model_loading import ModelLoadError
from brain.answering.registry import (
    ActiveModelWatcher,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    backend_hook,
    read_active,
)
from brain.conversations import ConversationStore
from brain.keys import RedisKeys
from brain.mood.reader import MoodReader
from brain.pipeline import Brain
from brain.redis_server import DEFAULT_MAX_CONNECTIONS, open_redis
from brain.settings import Settings, SettingsError
from retrieval.embedder import Embedder
from retrieval.index import FaqHit, Thresholds
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    redis: aioredis.Redis
    store: ConversationStore
    retriever: Retriever
    brain: Brain
    model_watcher: ActiveModelWatcher | None = None
    classifier_watcher: ActiveModelWatcher | None = None


async def make_backend(
    settings: Settings,
    embedder: Embedder | None = None,
    version: ModelVersion | None = None,
) -> AnswerBackend:
    """The answer backend DESKMATE_MODEL_BACKEND names (slowed by DESKMATE_ANSWER_DELAY).

    `version`: the registered model version to serve (None: the base model with
    DESKMATE_MODEL_ADAPTER), so that a process starts on the active version in one load.

    With the retrieval `embedder`, a generated answer's sources name every passage it
    draws on (brain.answering.attribution), not only those the model marked.

    A model that cannot be loaded does not stop the bot: it answers by quoting and says
    so in the log and the fallback metric. A model server that is down at start is
    reported, and each request falls back to quoting until it is back.
    """
    backend = await _base_backend(settings, _attribution(embedder), version)
    if settings.answer_delay > 0:
        return DelayedBackend(backend, settings.answer_delay)
    return backend


def _attribution(embedder: Embedder | None) -> Attribution | None:
    if embedder is None:
        return None

    def attribute(answer: str, hits: Sequence[FaqHit]) -> list[int]:
        return drawn_on(embedder, answer, hits)

    return attribute


async def _base_backend(
    settings: Settings, attribution: Attribution | None, version: ModelVersion | None
) -> AnswerBackend:
    if settings.model_backend == "quote":
        return QuoteBackend()
    if settings.model_backend == "openai":
        return await _openai_backend(settings, attribution)
    return await _hf_backend(settings, attribution, version)


async def _hf_backend(
    settings: Settings, attribution: Attribution | None, version: ModelVersion | None
) -> AnswerBackend:
    from brain.answering.hf_generator import HFGenerator, HFOptions

    options = HFOptions(
        device=settings.model_device,
        engine=settings.model_engine,
        int8=settings.model_int8,
        threads=settings.model_threads,
        max_new_tokens=settings.max_new_tokens,
        no_repeat_ngram=settings.no_repeat_ngram,
        context_tokens=settings.context_tokens,
        batching=BatchingOptions(settings.batch_max, settings.batch_window_ms / 1000),
    )

    async def load(version: ModelVersion | None) -> Generator:
        """The base version (DESKMATE_MODEL_ADAPTER, else the starter adapter), or a
        registered version's adapter."""
        adapter = version.adapter_dir if version is not None else settings.adapter
        name = version.name if version is not None else None
        return await compute.run_apart(
            HFGenerator.load, settings.model, settings.data_dir, options, adapter, name
        )

    try:
        generator = await load(version)
    except ModelLoadError as exc:
        return UnavailableModelBackend(settings.model, str(exc))
    return GenerativeBackend(
        generator,
        bot_name=settings.bot_name,
        max_passages=settings.answer_passages,
        reload=load,
        attribution=attribution,
        quote_over_words=settings.quote_over_words,
    )


async def _openai_backend(settings: Settings, attribution: Attribution | None) -> AnswerBackend:
    from brain.answering.openai_generator import OpenAIGenerator, OpenAIOptions

    if not settings.openai_url:
        raise SettingsError("DESKMATE_MODEL_BACKEND=openai needs DESKMATE_OPENAI_URL")
    generator = OpenAIGenerator(
        OpenAIOptions(
            url=settings.openai_url,
            model=settings.model,
            api_key=str(settings.openai_api_key),
            timeout_s=settings.openai_timeout,
            attempts=settings.openai_attempts,
            max_new_tokens=settings.max_new_tokens,
            context_tokens=settings.context_tokens,
        )
    )
    try:
        await generator.check()
    except GenerationError as exc:
        log.error("%s; answers quote the FAQ until it is back", exc)
    return GenerativeBackend(
        generator,
        bot_name=settings.bot_name,
        max_passages=settings.answer_passages,
        attribution=attribution,
        quote_over_words=settings.quote_over_words,
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
    return dataclasses.replace(stored, answer=answer, clarify=clarify, calibrated_from="settings")


async def _active_version(
    redis: aioredis.Redis, prefix: str, registry: ModelRegistry
) -> tuple[str | None, ModelVersion | None]:
    """(name, version) of the model version to start on; (None, None) if it cannot be
    read or resolved now (the watcher then applies it once it can)."""
    try:
        active = await read_active(redis, prefix, registry)
        return active, registry.resolve(active)
    except (RedisError, OSError, RegistryError) as exc:
        log.warning("starting on the base model: the active version is unknown (%s)", exc)
        return None, None


@asynccontextmanager
async def build_app(
    settings: Settings, show_progress: bool = True, *, staff_reachable: bool | None = None
) -> AsyncIterator[App]:
    """Everything a process answers with. `staff_reachable`: whether a person sees
    handoffs (default: a Slack staff channel is configured); the console passes False."""
    if staff_reachable is None:
        staff_reachable = bool(settings.slack_staff_channel and settings.slack_bot_token)
    base_embedder = await compute.run_apart(Embedder, settings.embedding_model)
    registry = ModelRegistry(settings.registry_dir)
    mood = MoodReader.default(settings.embedding_model, base_embedder.dimension)
    async with open_redis(
        settings.redis_url,
        settings.data_dir,
        wait_replicas=settings.redis_wait_replicas,
        max_connections=settings.redis_max_connections or DEFAULT_MAX_CONNECTIONS,
        pool_timeout=settings.redis_pool_timeout,
    ) as redis:
        # The retrieval model every process searches with (base, or learned from the FAQ).
        retriever_name, retriever_version = await active_version(settings, redis)
        first_run = await learn_sample_on_first_run(settings, redis, base_embedder, show_progress)
        if first_run is not None:
            retriever_name, retriever_version = first_run
        embedder = base_embedder
        if retriever_version is not None:
            embedder = await compute.run_apart(embedder_for, settings, retriever_version)
        index = await compute.run_apart(ensure_index, settings, embedder, show_progress)
        retriever = Retriever(
            embedder, index, top_k=settings.top_k, sentence_embedder=base_embedder
        )
        active, version = await _active_version(redis, settings.redis_prefix, registry)
        backend = await make_backend(settings, base_embedder, version)
        log.info("answering with %s", getattr(backend, "version", settings.model_backend))
        store = ConversationStore(
            redis,
            prefix=settings.redis_prefix,
            history_turns=settings.history_turns,
            ttl_seconds=settings.history_ttl,
        )
        brain = Brain(
            retriever,
            store,
            backend,
            max_message_chars=settings.max_message_chars,
            bot_name=settings.bot_name,
            thresholds=threshold_overrides(settings, index.thresholds),
            hours=settings.opening_hours,
            idle_seconds=settings.handoff_idle_seconds,
            mood=mood,
            staff_reachable=staff_reachable,
        )
        watcher = ActiveModelWatcher(
            redis,
            settings.redis_prefix,
            registry,
            hook=backend_hook(backend),
            interval=settings.model_watch_seconds,
            current=active,
        )
        classifier_watcher = ActiveModelWatcher(
            redis,
            settings.redis_prefix,
            ModelRegistry(settings.classifier_registry_dir, "mood classifier"),
            hook=mood.use_version,
            interval=settings.model_watch_seconds,
            key=RedisKeys(settings.redis_prefix).classifier_active,
            what="mood classifier",
        )
        retrieval_watcher = retriever_watcher(settings, redis, retriever, retriever_name)
        options = ingest_options(settings)
        faq_watcher = FaqWatcher(
            redis,
            settings.redis_prefix,
            retriever,
            settings.index_dir,
            interval=settings.faq_watch_seconds,
            options=options,
        )
        source_sync = SourceSync(
            redis,
            settings.redis_prefix,
            retriever,
            settings.index_dir,
            interval=settings.sync_seconds,
            owner=f"{socket.gethostname()}-{os.getpid()}",
            options=options,
        )
        try:
            async with watcher, classifier_watcher, retrieval_watcher, faq_watcher, source_sync:
                yield App(settings, redis, store, retriever, brain, watcher, classifier_watcher)
        finally:
            await backend.aclose()
