"""The model registry: fine-tuned versions on disk, and which one every process serves.

Layout under `<data_dir>/registry/`:

    v1/manifest.json   base model, creation time, metrics, training summary
    v1/adapter/        the LoRA adapter (peft `save_pretrained` output)
    active.json        {"stack": [promoted versions, newest last], "log": [events]}

The version every running process serves is the Redis string `{prefix}model:active`; the
registry's `active.json` mirrors it (and answers when Redis has no value, e.g. a fresh
Redis). The name `base` means the base model without an adapter. `promote` pushes a version
on the stack, `rollback` pops it and serves the one promoted before (or `base`).

The registry lives in brain/ because serving reads it; training writes new versions. The
mood classifier has a registry of its own (`<data_dir>/classifiers/`, same layout, the
`adapter/` directory holding the classifier head, `base` = the head shipped with the
package) followed through `{prefix}classifier:active`: the functions below take that key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from brain.keys import RedisKeys
from brain.polling import Poller

log = logging.getLogger(__name__)

BASE = "base"
RETRY_FAILED_SECONDS = 30.0  # a version that failed to load is tried again after this long
_NAME = re.compile(r"^v(\d+)$")


class RegistryError(ValueError):
    """An unknown version, or nothing to roll back to; the message says which."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered model: a LoRA adapter over `base_model` (no adapter for `base`)."""

    name: str
    base_model: str
    adapter_dir: Path | None
    created: float = 0.0
    metrics: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)


class ModelRegistry:
    """Versions on disk under `root`; `register` is atomic (staged, then renamed)."""

    def __init__(self, root: Path, what: str = "model") -> None:
        self.root = Path(root)
        self.what = what  # what error messages call the versions ("mood classifier")

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            (int(match[1]), path.name)
            for path in self.root.iterdir()
            if (match := _NAME.match(path.name)) and (path / "manifest.json").exists()
        ]
        return [self.get(name) for _, name in sorted(found)]

    def get(self, name: str) -> ModelVersion:
        """The version called `name`; raises RegistryError naming the known ones."""
        manifest = self.root / name / "manifest.json"
        if not _NAME.match(name) or not manifest.exists():
            known = ", ".join(v.name for v in self.versions()) or "none registered yet"
            raise RegistryError(f"no {self.what} version {name!r} in {self.root} (known: {known})")
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return ModelVersion(
            name=name,
            base_model=data["base_model"],
            adapter_dir=self.root / name / "adapter",
            created=float(data.get("created", 0.0)),
            metrics=data.get("metrics", {}),
            info=data.get("info", {}),
        )

    def resolve(self, name: str | None) -> ModelVersion | None:
        """None for the base model (`base` or unset), else the registered version."""
        return None if name in (None, "", BASE) else self.get(str(name))

    def register(
        self,
        adapter_dir: Path,
        base_model: str,
        metrics: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Copy an adapter into the registry as the next version (`v1`, `v2`, ...); not active."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".register-", dir=self.root))
        shutil.copytree(adapter_dir, staging / "adapter")
        manifest = {
            "base_model": base_model,
            "created": time.time(),
            "metrics": dict(metrics or {}),
            "info": dict(info or {}),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        while True:  # another trainer may register at the same moment: take the next number
            name = self._next_name()
            try:
                staging.rename(self.root / name)
                break
            except OSError:
                if not (self.root / name).exists():
                    raise
        return self.get(name)

    def _next_name(self) -> str:
        numbers = [int(m[1]) for p in self.root.iterdir() if (m := _NAME.match(p.name))]
        return f"v{max(numbers, default=0) + 1}"

    # -- which version is active (the file mirror of Redis) --

    def _state(self) -> dict[str, Any]:
        path = self.root / "active.json"
        if not path.exists():
            return {"stack": [], "log": []}
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return state

    def _save_state(self, state: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "active.json"
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(state, indent=2), encoding="utf-8")
        os.replace(staging, path)

    def active(self) -> str:
        """The active version according to the registry file (`base` if none)."""
        stack = self._state()["stack"]
        return str(stack[-1]) if stack else BASE

    def log(self) -> list[dict[str, Any]]:
        """Promotions and rollbacks, oldest first: {"action", "version", "time"}."""
        return list(self._state()["log"])

    def push_active(self, name: str) -> None:
        """Record `name` (a version or `base`) as active; rollback returns to the one before."""
        self.resolve(name)  # unknown names raise before anything changes
        state = self._state()
        state["stack"].append(name)
        state["log"].append({"action": "promote", "version": name, "time": time.time()})
        self._save_state(state)

    def pop_active(self) -> str:
        """Drop the active version; the one promoted before it (or `base`) is active again."""
        state = self._state()
        if not state["stack"]:
            raise RegistryError(f"nothing to roll back: the base {self.what} is already active")
        state["stack"].pop()
        now_active = state["stack"][-1] if state["stack"] else BASE
        state["log"].append({"action": "rollback", "version": now_active, "time": time.time()})
        self._save_state(state)
        return str(now_active)


def active_key(prefix: str) -> str:
    return RedisKeys(prefix).model_active


async def read_active(
    redis: aioredis.Redis, prefix: str, registry: ModelRegistry, key: str | None = None
) -> str:
    """The version processes should serve: Redis first, the registry file if Redis has none.
    `key` names another registry's active key (default `model:active`)."""
    value = await redis.get(key or active_key(prefix))
    if value:
        return value.decode() if isinstance(value, bytes) else str(value)
    return registry.active()


async def promote(
    redis: aioredis.Redis,
    prefix: str,
    registry: ModelRegistry,
    name: str,
    key: str | None = None,
) -> None:
    """Make `name` (a version or `base`) the served version everywhere: file, then Redis."""
    registry.push_active(name)
    await redis.set(key or active_key(prefix), name)


async def rollback(
    redis: aioredis.Redis, prefix: str, registry: ModelRegistry, key: str | None = None
) -> str:
    """Serve the version promoted before the active one; returns its name."""
    name = registry.pop_active()
    await redis.set(key or active_key(prefix), name)
    return name


async def apply_version_action(
    redis: aioredis.Redis,
    prefix: str,
    registry: ModelRegistry,
    action: str,
    version: str | None = None,
    key: str | None = None,
) -> str:
    """What `<registry> promote VERSION | rollback | list` do: the version served after."""
    if action == "promote" and version is not None:
        await promote(redis, prefix, registry, version, key)
        return version
    if action == "rollback":
        return await rollback(redis, prefix, registry, key)
    return await read_active(redis, prefix, registry, key)


def version_switched(action: str, active: str, what: str = "") -> str:
    """What `promote` / `rollback` say they did (`what`: "classifier ", "" for the model)."""
    if action == "promote":
        return f"Promoted {what}{active}: running processes switch within seconds."
    return f"Rolled back: now serving {what}{active}."


@dataclass(frozen=True, slots=True)
class Column:
    """A figure of a version in `versions_table` (right-aligned in `width` characters)."""

    title: str
    width: int
    value: Callable[[ModelVersion], str]

    @classmethod
    def metric(cls, title: str, width: int, name: str) -> Column:
        """The version's metric `name` to 3 decimals ("-" when it has none)."""
        return cls(title, width, lambda v: f"{v.metrics[name]:.3f}" if name in v.metrics else "-")


def versions_table(
    registry: ModelRegistry,
    active: str,
    columns: Sequence[Column],
    last: tuple[str, Callable[[ModelVersion], str]],
    base_note: str,
) -> str:
    """The versions of a registry, one a line, the active one marked `*`: name, created,
    `columns`, then the free-text `last` column (`base_note` on the `base` line)."""

    def line(marker: str, name: str, created: str, cells: Sequence[str], tail: str) -> str:
        figures = " ".join(f"{cell:>{c.width}}" for cell, c in zip(cells, columns, strict=True))
        return f"{marker}{name:9} {created:17} {figures}  {tail}".rstrip()

    title, describe = last
    lines = [line("  ", "version", "created", [c.title for c in columns], title)]
    lines.append(line("* " if active == BASE else "  ", BASE, "", [""] * len(columns), base_note))
    for version in registry.versions():
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(version.created))
        cells = [c.value(version) for c in columns]
        marker = "* " if version.name == active else "  "
        lines.append(line(marker, version.name, created, cells, describe(version)))
    lines.append(f"\nActive: {active}  (registry: {registry.root})")
    return "\n".join(lines)


VersionHook = Callable[[ModelVersion | None], Awaitable[None]]


def backend_hook(backend: object) -> VersionHook:
    """The backend's `use_version(version)` if it has one (the generative backend loads
    the version's adapter and switches to it); otherwise the version is only recorded by
    the watcher, as with the quote backend."""
    use_version = getattr(backend, "use_version", None)
    if use_version is not None:
        hook: VersionHook = use_version
        return hook

    async def record(version: ModelVersion | None) -> None:
        name = version.name if version else BASE
        log.info("model version %s recorded (this backend has no model to swap)", name)

    return record


class ActiveModelWatcher:
    """Follows `{prefix}model:active` and calls `hook` when the served version changes.

    Polls Redis every `interval` seconds (one GET; survives Redis restarts and needs no
    keyspace notifications). The hook receives the resolved version (None = base model)
    and must swap models without dropping in-flight work: the generative backend loads the
    new adapter beside the old model and switches for the next request; the quote backend
    only records it. A version that fails to load is logged and retried every
    RETRY_FAILED_SECONDS, not on every poll.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        registry: ModelRegistry,
        hook: VersionHook | None = None,
        interval: float = 1.0,
        current: str | None = None,
        key: str | None = None,
        what: str = "model",
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.registry = registry
        self.hook = hook
        self.key = key  # another registry's active key (default `model:active`)
        self.what = what  # what the log calls the versions
        # The version last applied; `current` when the backend was built serving it.
        self.current = current
        self._poller = Poller(self.check, interval, "model-watcher")
        self.changed = asyncio.Event()  # set after each applied change (tests, health)
        self._failed: tuple[str | None, float] = (None, 0.0)  # a version that failed to load

    async def check(self) -> bool:
        """Apply the active version if it changed; True if it did."""
        try:
            wanted = await read_active(self.redis, self.prefix, self.registry, self.key)
        except (RedisError, OSError) as exc:
            log.warning("cannot read the active %s version: %s", self.what, exc)
            return False
        if wanted == self.current:
            return False
        failed_name, retry_at = self._failed
        if wanted == failed_name and time.monotonic() < retry_at:
            return False
        try:
            version = self.registry.resolve(wanted)
            if self.hook is not None:
                await self.hook(version)
        except Exception:
            log.exception(
                "switching to %s version %s failed; still serving %s (retrying in %.0f s)",
                self.what,
                wanted,
                self.current,
                RETRY_FAILED_SECONDS,
            )
            self._failed = (wanted, time.monotonic() + RETRY_FAILED_SECONDS)
            return False
        # The first version applied is where a process starts, not news: said at INFO (a
        # WARNING would print into `deskmate chat`); a switch is worth a WARNING.
        level = logging.WARNING if self.current is not None else logging.INFO
        was = self.current or "none"
        log.log(level, "now serving %s version %s (was %s)", self.what, wanted, was)
        self.current = wanted
        self.changed.set()
        return True

    async def __aenter__(self) -> ActiveModelWatcher:
        await self.check()
        self._poller.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._poller.stop()
