"""The mood reader: classifier when one fits the embedder, the word list otherwise; it
follows promoted classifier versions like the dialogue model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from bots.app import build_app
from brain.answering.registry import BASE, ActiveModelWatcher, ModelRegistry, promote, rollback
from brain.keys import RedisKeys
from brain.mood.classifier import DEFAULT_DIR, ClassifierLoadError, MoodClassifier, MoodThresholds
from brain.mood.reader import REGEX, MoodReader
from brain.redis_server import EmbeddedRedis
from brain.settings import Settings
from retrieval.index import FaqIndex
from tests.brain.mood.test_classifier import tiny_top_layer_classifier, two_label_head


def test_without_a_classifier_the_word_list_reads_anger() -> None:
    reader = MoodReader.regex_only()
    assert reader.version == REGEX and not reader.needs_vector
    assert reader.read("this is a scam", None).anger == 1.0
    assert reader.read("where is my parcel?", None).anger == 0.0


def test_a_classifier_for_another_embedder_falls_back_to_the_word_list() -> None:
    reader = MoodReader(two_label_head(), embedder="all-mpnet-base-v2", dimension=768)
    assert reader.classifier is None and reader.version == REGEX
    fitting = MoodReader(two_label_head(), embedder="tiny", dimension=8)
    assert fitting.read("anything", np.eye(8, dtype=np.float32)[0]).label == "anger"


def test_a_top_layer_classifier_reads_the_states_and_needs_them() -> None:
    reader = MoodReader(tiny_top_layer_classifier(), embedder="tiny", dimension=8)
    assert reader.needs_vector and reader.needs_states
    assert not MoodReader(two_label_head(), embedder="tiny", dimension=8).needs_states
    vector = np.eye(8, dtype=np.float32)[0]
    states = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    assert reader.read("I am furious", vector, states).source == "base"
    assert reader.read("I am furious", vector).source == REGEX  # no states: the word list


def test_the_default_reader_loads_the_bundled_classifier() -> None:
    reader = MoodReader.default("sentence-transformers/all-MiniLM-L6-v2", 384)
    assert reader.classifier is not None and reader.version == BASE
    assert MoodReader.default("some/other-model", 768).version == REGEX


async def test_promoted_classifier_versions_are_followed(
    tmp_path: Path, redis: aioredis.Redis
) -> None:
    registry = ModelRegistry(tmp_path / "classifiers")
    head = two_label_head()
    head.save(tmp_path / "head")
    registry.register(tmp_path / "head", "tiny")
    reader = MoodReader(None, embedder="tiny", dimension=8, default_dir=None)
    key = RedisKeys("dm:").classifier_active
    watcher = ActiveModelWatcher(redis, "dm:", registry, reader.use_version, 0.05, key=key)
    async with watcher:
        assert reader.version == REGEX  # base, and no bundled head in this reader
        watcher.changed.clear()
        await promote(redis, "dm:", registry, "v1", key)
        await asyncio.wait_for(watcher.changed.wait(), timeout=2)
        assert reader.version == "v1"
        assert await redis.get("dm:classifier:active") == "v1"
        assert await redis.get("dm:model:active") is None  # the dialogue model is untouched
        watcher.changed.clear()
        assert await rollback(redis, "dm:", registry, key) == BASE
        await asyncio.wait_for(watcher.changed.wait(), timeout=2)
        assert reader.version == REGEX


async def test_a_version_for_another_embedder_is_refused(tmp_path: Path) -> None:
    head = two_label_head()
    head.save(tmp_path / "head")
    registry = ModelRegistry(tmp_path / "classifiers")
    version = registry.register(tmp_path / "head", "tiny")
    reader = MoodReader(None, embedder="all-MiniLM-L6-v2", dimension=384, default_dir=None)
    with pytest.raises(ClassifierLoadError, match="does not fit"):
        await reader.use_version(version)


async def test_a_running_app_serves_the_shipped_classifier_and_follows_promotions(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, sample_index: FaqIndex
) -> None:
    settings = Settings.load(
        {
            "DESKMATE_DATA_DIR": str(tmp_path / "data"),
            "DESKMATE_REDIS_URL": redis_server.url,
            "DESKMATE_MODEL_WATCH_SECONDS": "0.05",
            "DESKMATE_MODEL_BACKEND": "quote",  # the mood classifier is under test
        }
    )
    sample_index.save(settings.index_dir)
    shipped = MoodClassifier.load(DEFAULT_DIR)
    tuned = shipped.with_thresholds(MoodThresholds(0.99, 0.98, "tests"))
    tuned.save(tmp_path / "tuned")
    registry = ModelRegistry(settings.classifier_registry_dir)
    registry.register(tmp_path / "tuned", shipped.embedder)
    async with build_app(settings, show_progress=False) as app:
        watcher = app.classifier_watcher
        assert watcher is not None and watcher.current == BASE
        assert app.brain.mood.version == BASE
        assert app.brain.mood.thresholds == shipped.thresholds
        watcher.changed.clear()
        key = RedisKeys(settings.redis_prefix).classifier_active
        await promote(redis, settings.redis_prefix, registry, "v1", key)
        await asyncio.wait_for(watcher.changed.wait(), timeout=5)
        assert app.brain.mood.version == "v1"
        assert app.brain.mood.thresholds.strong == 0.99
