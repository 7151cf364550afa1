"""The model registry, promote/rollback through Redis, and the watcher running processes use."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bots.app import build_app
from brain.answering.registry import (
    BASE,
    ActiveModelWatcher,
    Column,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    apply_version_action,
    promote,
    read_active,
    rollback,
    version_switched,
    versions_table,
)
from brain.redis_server import EmbeddedRedis
from brain.settings import Settings
from retrieval.index import FaqIndex


def make_adapter(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 4}')
    return folder


def test_register_numbers_versions_and_keeps_metrics(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.versions() == []
    first = registry.register(make_adapter(tmp_path, "a"), "tiny", metrics={"token_f1": 0.5})
    second = registry.register(make_adapter(tmp_path, "b"), "tiny")
    assert [v.name for v in registry.versions()] == ["v1", "v2"]
    assert first.metrics == {"token_f1": 0.5}
    assert second.adapter_dir is not None
    assert (second.adapter_dir / "adapter_config.json").exists()
    assert registry.active() == BASE  # registering never activates
    with pytest.raises(RegistryError, match=r"no model version 'v9'.*known: v1, v2"):
        registry.get("v9")


async def test_promote_and_rollback_move_redis_and_the_registry(
    tmp_path: Path, redis: aioredis.Redis
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    for name in "ab":
        registry.register(make_adapter(tmp_path, name), "tiny")
    assert await read_active(redis, "dm:", registry) == BASE
    await promote(redis, "dm:", registry, "v1")
    await promote(redis, "dm:", registry, "v2")
    assert await redis.get("dm:model:active") == "v2"
    assert registry.active() == "v2"
    assert await rollback(redis, "dm:", registry) == "v1"
    assert await rollback(redis, "dm:", registry) == BASE
    assert await redis.get("dm:model:active") == BASE
    with pytest.raises(RegistryError, match="nothing to roll back"):
        await rollback(redis, "dm:", registry)
    with pytest.raises(RegistryError):
        await promote(redis, "dm:", registry, "v7")
    assert [e["action"] for e in registry.log()] == ["promote", "promote", "rollback", "rollback"]
    # A fresh Redis (no key) falls back to the registry's record.
    await promote(redis, "dm:", registry, "v2")
    await redis.delete("dm:model:active")
    assert await read_active(redis, "dm:", registry) == "v2"


async def test_the_version_commands_switch_and_list_every_registry_alike(
    tmp_path: Path, redis: aioredis.Redis
) -> None:
    registry = ModelRegistry(tmp_path / "classifiers", "mood classifier")
    registry.register(make_adapter(tmp_path, "a"), "tiny", metrics={"macro_f1": 0.7071})
    registry.register(make_adapter(tmp_path, "b"), "tiny")
    key = "dm:classifier:active"
    assert await apply_version_action(redis, "dm:", registry, "promote", "v2", key) == "v2"
    assert await redis.get(key) == "v2" and await redis.get("dm:model:active") is None
    assert await apply_version_action(redis, "dm:", registry, "list", None, key) == "v2"
    assert await apply_version_action(redis, "dm:", registry, "rollback", None, key) == BASE
    assert (
        version_switched("rollback", BASE, "classifier ")
        == "Rolled back: now serving classifier base."
    )
    assert version_switched("promote", "v2").startswith("Promoted v2: running processes switch")
    columns = [Column.metric("macro-F1", 9, "macro_f1"), Column("base", 6, lambda v: v.base_model)]
    table = versions_table(registry, "v1", columns, ("note", lambda v: v.name * 2), "(shipped)")
    lines = table.splitlines()
    assert lines[0].split() == ["version", "created", "macro-F1", "base", "note"]
    assert lines[1].split() == [BASE, "(shipped)"]
    assert lines[2].startswith("* v1") and lines[2].split()[-3:] == ["0.707", "tiny", "v1v1"]
    assert lines[3].startswith("  v2") and lines[3].split()[-3:] == ["-", "tiny", "v2v2"]
    assert lines[-1] == f"Active: v1  (registry: {registry.root})"


async def test_watcher_applies_promotions_within_its_interval(
    tmp_path: Path, redis: aioredis.Redis
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(make_adapter(tmp_path, "a"), "tiny")
    seen: list[str] = []

    async def hook(version: ModelVersion | None) -> None:
        seen.append(version.name if version else BASE)

    async with ActiveModelWatcher(redis, "dm:", registry, hook, interval=0.05) as watcher:
        assert watcher.current == BASE and seen == [BASE]
        watcher.changed.clear()
        await promote(redis, "dm:", registry, "v1")
        await asyncio.wait_for(watcher.changed.wait(), timeout=2)
        assert watcher.current == "v1" and seen == [BASE, "v1"]
        # An unknown name (another registry's) is logged, not applied, and not retried each poll.
        await redis.set("dm:model:active", "v5")
        assert await watcher.check() is False
        await asyncio.sleep(0.2)
        assert watcher.current == "v1" and seen == [BASE, "v1"]


async def test_a_watcher_started_on_the_active_version_does_not_load_it_again(
    tmp_path: Path, redis: aioredis.Redis
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(make_adapter(tmp_path, "a"), "tiny")
    await promote(redis, "dm:", registry, "v1")
    seen: list[str] = []

    async def hook(version: ModelVersion | None) -> None:
        seen.append(version.name if version else BASE)

    # The app builds its backend on the active version, then tells the watcher so.
    async with ActiveModelWatcher(redis, "dm:", registry, hook, 0.05, current="v1") as watcher:
        await asyncio.sleep(0.2)
        assert seen == [] and watcher.current == "v1"
        await promote(redis, "dm:", registry, BASE)
        await asyncio.wait_for(watcher.changed.wait(), timeout=2)
        assert seen == [BASE]


async def test_a_running_app_follows_promotions(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, sample_index: FaqIndex
) -> None:
    settings = Settings.load(
        {
            "DESKMATE_DATA_DIR": str(tmp_path / "data"),
            "DESKMATE_REDIS_URL": redis_server.url,
            "DESKMATE_MODEL_WATCH_SECONDS": "0.05",
            "DESKMATE_MODEL_BACKEND": "quote",  # the watcher records versions, loads none
        }
    )
    sample_index.save(settings.index_dir)  # the app loads it instead of building one
    registry = ModelRegistry(settings.registry_dir)
    registry.register(make_adapter(tmp_path, "a"), "tiny")
    async with build_app(settings, show_progress=False) as app:
        watcher = app.model_watcher
        assert watcher is not None and watcher.current == BASE
        watcher.changed.clear()
        await promote(redis, settings.redis_prefix, registry, "v1")
        await asyncio.wait_for(watcher.changed.wait(), timeout=2)
        assert watcher.current == "v1"  # the quote backend records it; nothing to load
    async with build_app(settings, show_progress=False) as app:  # a restart starts on v1
        assert app.model_watcher is not None and app.model_watcher.current == "v1"
