"""Hot-swapping LoRA adapters under a served model, between batches.

A generative backend keeps its model in an `AdapterSwitch`, generates inside
`with switch.serving() as model:`, and passes `switch.use` as the hook of
`ActiveModelWatcher`. A promote then loads the new adapter and swaps it in under the same
lock: the batch in progress finishes with the weights it started with, the next batch
gets the new ones, and no message is dropped (at most delayed by the adapter load).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from brain.model_registry import BASE, ModelVersion

log = logging.getLogger(__name__)


class AdapterSwitch:
    """The model to serve: a base causal LM, with at most one LoRA adapter applied."""

    def __init__(self, base_model: Any, base_name: str = "") -> None:
        self.model: Any = base_model
        self.base_name = base_name
        self.version = BASE
        self._lock = threading.Lock()

    @contextmanager
    def serving(self) -> Iterator[Any]:
        """Hold the current model for one batch; swaps wait until the batch is done."""
        with self._lock:
            yield self.model

    async def use(self, version: ModelVersion | None) -> None:
        """Serve `version` (None: the base model) from the next batch on."""
        await asyncio.to_thread(self.swap, version)

    def swap(self, version: ModelVersion | None) -> None:
        """Blocking form of `use`, for code that is not async."""
        from peft import PeftModel

        name = BASE if version is None else version.name
        if name == self.version:
            return
        if version is not None and self.base_name and version.base_model != self.base_name:
            log.warning(
                "model version %s was trained on %s but this process serves %s",
                name,
                version.base_model,
                self.base_name,
            )
        with self._lock:
            model = self.model
            if version is None:
                if isinstance(model, PeftModel):
                    model = model.unload()  # restores the base modules in place
            elif isinstance(model, PeftModel):
                old = model.active_adapter
                model.load_adapter(str(version.adapter_dir), adapter_name=name)
                model.set_adapter(name)
                model.delete_adapter(old)
            else:
                model = PeftModel.from_pretrained(
                    model, str(version.adapter_dir), adapter_name=name
                )
            model.eval()
            self.model = model
            self.version = name
