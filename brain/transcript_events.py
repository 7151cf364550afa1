"""The shape of a `transcripts` stream entry, shared by everything that writes one.

The conversation store writes turns, feedback and resets; the handoff machine writes its
transitions inside its own transactions. Both build entries here, so export, training and
analytics read one shape: `type`, `channel`, `conversation`, `user`, `time`, `data` (JSON).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

TRANSCRIPTS_MAXLEN = 5_000_000  # approximate cap; export before it is reached


def transcript_entry(
    kind: str,
    channel: str,
    conversation_id: str,
    user_id: str,
    data: Mapping[str, Any],
    now: float | None = None,
) -> dict[Any, Any]:
    """The fields of one `transcripts` entry."""
    return {
        "type": kind,
        "channel": channel,
        "conversation": conversation_id,
        "user": user_id,
        "time": f"{time.time() if now is None else now:.3f}",
        "data": json.dumps(data, ensure_ascii=False),
    }
