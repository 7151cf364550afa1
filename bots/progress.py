"""Progress bars for long work (embedding, evaluation), on stderr so stdout stays clean."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(
    description: str, enabled: bool = True, unit: str = "text"
) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(done, total)`; the bar appears once there is work to show (and
    follows a total that grows)."""
    bar: tqdm | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if not enabled or total == 0:
            return
        if bar is None:
            bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False)
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def counting(update: Callable[[int, int], None], total: int) -> Callable[[int], None]:
    """Adapt `update(done, total)` to `step(n)`, for work that reports items as it goes."""
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        update(done, total)

    return step
