"""Retrieval models: the embedder learned from the FAQ, versioned and followed everywhere.

`deskmate faq import` (and `deskmate faq learn`) fine-tune the embedder on the FAQ's
phrasings (retrieval.learning), register a kept model as a version in
`<data_dir>/retrievers/` (the registry of brain.answering.registry: `vN/adapter/` holds the
sentence-transformers model) and make it the active one: `{prefix}retriever:active` in
Redis, mirrored in the registry's `active.json`. Every serving process follows that key
(`retriever_watcher`): it loads the version's embedder, takes the index embedded with it
from the index directory (or embeds the entries again) and swaps both at once.
`deskmate faq model list | promote vN | rollback` choose by hand; `base` is the
configured DESKMATE_EMBEDDING_MODEL.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from brain import compute
from brain.answering.registry import (
    BASE,
    ActiveModelWatcher,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    promote,
    read_active,
)
from brain.keys import RedisKeys
from brain.settings import Settings
from retrieval.embedder import Embedder
from retrieval.faq import FaqEntry
from retrieval.index import FaqIndex, IndexLoadError
from retrieval.learning import LearnOptions, LearnResult, learn
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)
WHAT = "retrieval model"


def retriever_registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.retriever_registry_dir, WHAT)


def active_key(settings: Settings) -> str:
    return RedisKeys(settings.redis_prefix).retriever_active


def embedder_for(settings: Settings, version: ModelVersion | None) -> Embedder:
    """The embedder of a registered version (None: the configured base model)."""
    if version is None:
        return Embedder(settings.embedding_model)
    return Embedder(str(version.info["name"]), location=str(version.adapter_dir))


def learned_embedder(result: LearnResult, base: Embedder) -> Embedder:
    """The embedder a `learn` result serves: the learned one if kept, else `base`."""
    if result.model_dir is None:
        return base
    return Embedder(result.name, location=str(result.model_dir))


def learn_from_faq(
    settings: Settings,
    base: Embedder,
    entries: Sequence[FaqEntry],
    labelled: Sequence[tuple[str, str]] = (),
    options: LearnOptions | None = None,
    show_progress: bool = True,
) -> LearnResult:
    """Fine-tune on the entries' phrasings (cached by content under the data dir)."""
    from bots.progress import progress_bar

    with progress_bar("Learning the FAQ", show_progress, unit="step") as update:
        return learn(
            base,
            entries,
            settings.learn_cache_dir,
            labelled=labelled,
            options=options,
            progress=update,
        )


def register(settings: Settings, result: LearnResult, base: Embedder) -> str:
    """The registered version of a kept learned model (registered now if new); `base`
    when the base model was kept."""
    if result.model_dir is None:
        return BASE
    registry = retriever_registry(settings)
    for version in registry.versions():
        if version.info.get("name") == result.name:
            return version.name
    version = registry.register(
        result.model_dir,
        base.name,
        metrics={
            "held_out_mrr": result.learned_mrr,
            "base_held_out_mrr": result.base_mrr,
            "held_out_recall@1": result.learned_recall_at_1,
            "base_held_out_recall@1": result.base_recall_at_1,
        },
        info={"name": result.name, "pairs": result.pairs, "seconds": result.seconds},
    )
    return version.name


async def make_active(settings: Settings, redis: aioredis.Redis, name: str) -> bool:
    """Serve version `name` everywhere unless it already is; True if it changed."""
    registry = retriever_registry(settings)
    if await read_active(redis, settings.redis_prefix, registry, active_key(settings)) == name:
        return False
    await promote(redis, settings.redis_prefix, registry, name, active_key(settings))
    return True


async def active_version(
    settings: Settings, redis: aioredis.Redis
) -> tuple[str | None, ModelVersion | None]:
    """(name, version) of the retrieval model to start on; the base model if unknown."""
    registry = retriever_registry(settings)
    try:
        name = await read_active(redis, settings.redis_prefix, registry, active_key(settings))
        return name, registry.resolve(name)
    except (RedisError, OSError, RegistryError) as exc:
        log.warning("starting on the base retrieval model: the active one is unknown (%s)", exc)
        return None, None


def index_for(embedder: Embedder, index: FaqIndex, index_dir: Path) -> FaqIndex:
    """`index`'s entries embedded by `embedder`: the saved index if it was embedded by
    it, else embedded now (and saved, so the next process starts on it)."""
    if index.model == embedder.name:
        return index
    try:
        saved = FaqIndex.load(index_dir)
    except IndexLoadError:
        saved = None
    if saved is not None and saved.model == embedder.name and saved.entries == index.entries:
        return saved
    # Keeps the thresholds, with their labelled questions embedded again by `embedder`.
    rebuilt = FaqIndex.build(index.entries, embedder, previous=index, sources=index.sources)
    rebuilt.save(index_dir)
    return rebuilt


def retriever_watcher(
    settings: Settings,
    redis: aioredis.Redis,
    retriever: Retriever,
    current: str | None,
) -> ActiveModelWatcher:
    """Follows `retriever:active`: a new version's embedder and index replace the served
    pair together (searches in flight finish on the old pair)."""

    async def use_version(version: ModelVersion | None) -> None:
        embedder = await compute.run_apart(embedder_for, settings, version)
        index = await compute.run_apart(index_for, embedder, retriever.index, settings.index_dir)
        retriever.swap(embedder, index)

    return ActiveModelWatcher(
        redis,
        settings.redis_prefix,
        retriever_registry(settings),
        hook=use_version,
        interval=settings.model_watch_seconds,
        current=current,
        key=active_key(settings),
        what=WHAT,
    )


def active_embedder(settings: Settings, base: Embedder) -> Embedder:
    """The embedder of the active version as the registry file has it (commands that
    read the served index without Redis), `base` for the base model."""
    registry = retriever_registry(settings)
    try:
        version = registry.resolve(registry.active())
    except RegistryError as exc:
        log.warning("using the base retrieval model: %s", exc)
        return base
    return base if version is None else embedder_for(settings, version)


async def learn_sample_on_first_run(
    settings: Settings, redis: aioredis.Redis, base: Embedder, show_progress: bool
) -> tuple[str | None, ModelVersion | None] | None:
    """On the very first run (no index, no DESKMATE_FAQ: the bundled sample FAQ will be
    loaded), learn the sample as `faq import` would and serve what it keeps. Returns the
    new active (name, version), or None when there is nothing to do."""
    import asyncio

    from brain.settings import SAMPLE_FAQ
    from retrieval.faq import load_faq

    if settings.faq or not settings.faq_learn or (settings.index_dir / "meta.json").exists():
        return None
    entries = await asyncio.to_thread(load_faq, [SAMPLE_FAQ])
    print("First run: learning the sample FAQ's phrasings (once).", file=sys.stderr)
    result = await compute.run_apart(
        learn_from_faq, settings, base, entries, (), None, show_progress
    )
    name = register(settings, result, base)
    if name == BASE:
        return None
    await make_active(settings, redis, name)
    return name, retriever_registry(settings).get(name)
