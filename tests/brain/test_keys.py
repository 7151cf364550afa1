"""Key names deployments hold live data under: a change would strand that data (a dedupe
key renamed answers a redelivered message twice), so they are pinned here."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from brain.keys import RedisKeys, cluster_prefix, hash_tag


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


def every_key(keys: RedisKeys) -> list[str]:
    """Every key `keys` names, with sample arguments (a new key must be added here)."""
    named = [
        getattr(keys, name)
        for name, value in vars(RedisKeys).items()
        if isinstance(value, property)
    ]
    conversation = ("telegram", "{42}")  # a platform id may hold braces: they must not count
    return [
        *named,
        keys.seen(*conversation, "55"),
        keys.telegram_update_seen(777000, 12),
        keys.slack_event_seen("Ev01"),
        keys.slack_placeholder("C1:17.1"),
        keys.telegram_typing("42"),
        keys.queue(keys.inbox, *conversation),
        keys.queue(keys.outbox, *conversation),
        keys.legacy_queue(keys.inbox, "42"),
        keys.lock(keys.inbox, *conversation),
        keys.lock(keys.outbox, *conversation),
        keys.process("host-1"),
        keys.conversation(*conversation),
        keys.legacy_conversation("42"),
        keys.handoff(*conversation),
        keys.legacy_handoff("42"),
        keys.handoff_thread("17.1"),
        keys.handoff_record("h1"),
        keys.stats_day("2026-01-02"),
        RedisKeys(keys.evaluation_prefix).conversation(*conversation),
    ]


def test_on_redis_cluster_every_key_of_a_deployment_shares_one_slot() -> None:
    """The flow's scripts and the handoff transactions touch several keys in one step;
    Redis Cluster runs such a step only when all of them hash to one slot."""
    keys = RedisKeys(cluster_prefix("dm:"))
    assert keys.prefix == "{dm}:"
    assert keys.conversation("telegram", "42") == "{dm}:conv:telegram:42"
    assert {key_slot(key.encode()) for key in every_key(keys)} == {key_slot(b"dm")}
    # The standalone default keeps its shape: no tag, keys spread by their whole name.
    assert hash_tag("dm:") is None
    assert len({key_slot(key.encode()) for key in every_key(RedisKeys("dm:"))}) > 1


@pytest.mark.parametrize(
    ("prefix", "tagged"),
    [
        ("dm:", "{dm}:"),
        ("acme:bot:", "{acme:bot}:"),
        ("dm", "{dm}"),
        ("{acme}:", "{acme}:"),
        ("x{acme}:", "x{acme}:"),
    ],
)
def test_a_prefix_gets_a_hash_tag_unless_it_has_one(prefix: str, tagged: str) -> None:
    assert cluster_prefix(prefix) == tagged
    assert hash_tag(tagged)


@pytest.mark.parametrize("prefix", ["", ":", "{}:", "}dm:"])
def test_a_prefix_that_cannot_be_tagged_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        cluster_prefix(prefix)
