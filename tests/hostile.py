"""What fuzz tests of inbound paths share: text as hostile clients send it, and bounds
that keep each fuzz test to a few seconds on a loaded machine."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# What text handling trips on: halves of an emoji (a client cutting a string mid-emoji
# sends a lone surrogate), NUL, a BOM, line and paragraph separators, a whole emoji.
TRICKY = ["\ud83d", "\ude00", "\udfff", "\x00", "\ufeff", "\u2028", "\r\n", "😀", "@", "/"]
# Any code point (lone surrogates too: hypothesis leaves them out by default), with the
# tricky ones mixed in often enough that every fuzz run meets them.
ANY_TEXT = st.lists(
    st.text(st.characters(exclude_categories=()), max_size=40) | st.sampled_from(TRICKY),
    max_size=8,
).map("".join)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
