"""Key names deployments hold live data under: a change would strand that data (a dedupe
key renamed answers a redelivered message twice), so they are pinned here."""

from __future__ import annotations

from brain.keys import RedisKeys


def test_dedupe_keys_share_one_shape_and_keep_their_names() -> None:
    keys = RedisKeys("dm:")
    assert keys.seen("telegram", "-100123:7", "55") == "dm:seen:telegram:-100123:7:55"
    assert keys.telegram_update_seen(777000, 12) == "dm:seen:telegram:update:777000:12"
    assert keys.slack_event_seen("Ev01") == "dm:seen:slack:Ev01"


def test_a_conversations_keys_name_its_channel() -> None:
    keys = RedisKeys("dm:")
    assert keys.conversation("telegram", "42") == "dm:conv:telegram:42"
    assert keys.handoff("slack", "C1:17.1") == "dm:handoff:slack:C1:17.1"
    assert keys.queue(keys.inbox, "http", "http:c1") == "dm:inbox:http:http:c1"
    assert keys.lock(keys.outbox, "telegram", "42") == "dm:sendlock:telegram:42"
    # The names of the version before channels, read only to move what is under them.
    assert keys.legacy_conversation("42") == "dm:conv:42"
    assert keys.legacy_handoff("42") == "dm:handoff:42"
    assert keys.legacy_queue(keys.outbox, "42") == "dm:outbox:42"
