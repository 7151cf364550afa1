"""Every Redis key deskmate uses: names, shapes and lifetimes, in one place.

All keys live under one configurable prefix (`DESKMATE_REDIS_PREFIX`, default `dm:`).
Other modules ask `RedisKeys(prefix)` for a key; none spells one itself. The README's
"Redis keys" table lists the same keys for operators.

Keys of one conversation name its channel beside its id (`conv:{channel}:{id}`): ids are
the platforms' (a Telegram chat id, a Slack channel) and only unique within a channel.
The `legacy_*` names are the same keys as deskmate wrote them before that; only the
upgrade paths read them (`brain.conversations`, `brain.flow.upgrade`).

On Redis Cluster every key's prefix carries a hash tag (`{dm}:`, see `cluster_prefix`):
the flow's scripts and transactions touch a stream, a conversation's keys and shared
indexes in one atomic step, and Redis Cluster runs such a step only within one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SEEN_TTL_SECONDS: Final = 24 * 3600  # dedupe of platform messages and events
PLACEHOLDER_TTL_SECONDS: Final = 3600  # Slack "thinking..." placeholders awaiting a reply
HANDOFF_RECORD_TTL_SECONDS: Final = 400 * 24 * 3600  # finished handoffs, for analytics
DELIVERY_TTL_SECONDS: Final = 24 * 3600  # a reply's delivery record, if never finished
PARTIAL_TTL_SECONDS: Final = 3600  # an answer's text shown while it is generated
PARTIALS_MAXLEN: Final = 10_000  # notifications of partial answers kept (capped stream)
CLAIM_SAMPLES: Final = 50  # latest time-to-claim measurements kept


def hash_tag(prefix: str) -> str | None:
    """The hash tag a key starting with `prefix` is placed by on Redis Cluster (the text
    between the first `{` and the next `}`, if not empty); None when the prefix has none,
    and keys would then spread over slots by their whole name."""
    opening = prefix.find("{")
    closing = prefix.find("}", opening + 1) if opening >= 0 else -1
    if closing <= opening + 1:
        return None
    return prefix[opening + 1 : closing]


def cluster_prefix(prefix: str) -> str:
    """`prefix` as deskmate uses it on Redis Cluster: with a hash tag, so every key of the
    deployment lands in one slot. `dm:` becomes `{dm}:`; a prefix with a tag already
    (`{acme}:bot:`) is kept as it is."""
    if hash_tag(prefix) is not None:
        return prefix
    name = prefix.rstrip(":")
    if not name or "{" in name or "}" in name:
        raise ValueError(
            "must be a name to tag on Redis Cluster (e.g. dm:) or carry its own "
            "hash tag (e.g. {dm}:)"
        )
    return "{" + name + "}" + prefix[len(name) :]


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names of deskmate's Redis keys under one prefix."""

    prefix: str = "dm:"

    # -- the message flow (streams and their bookkeeping) ------------------------------

    @property
    def inbox(self) -> str:
        """Stream: inbound messages, durable before the platform is acknowledged."""
        return self.prefix + "inbox"

    @property
    def outbox(self) -> str:
        """Stream: replies and staff notices waiting for their sender."""
        return self.prefix + "outbox"

    @property
    def undelivered(self) -> str:
        """Stream: replies a platform refused for good, kept for staff (capped)."""
        return self.prefix + "undelivered"

    # Dedupe markers: one shape, `seen:{scope...}:{id}`, set with SET NX EX
    # SEEN_TTL_SECONDS. The scope is what the platform's id is unique within, which is
    # why each kind of id has its own method rather than callers composing scopes.

    def _seen(self, *scope_and_id: object) -> str:
        return f"{self.prefix}seen:" + ":".join(map(str, scope_and_id))

    def seen(self, channel: str, conversation_id: str, message_id: str) -> str:
        """Dedupe key of one platform message. Platform message ids are only unique
        within a chat on some platforms (Telegram), so the conversation is part of it."""
        return self._seen(channel, conversation_id, message_id)

    def telegram_update_seen(self, bot_id: int, update_id: int) -> str:
        """Dedupe key of one Telegram update (redeliveries), checked before "typing..."
        starts; button presses, whose feedback never reaches the inbox, have no other.
        Update ids are counted per bot."""
        return self._seen("telegram", "update", bot_id, update_id)

    def slack_event_seen(self, event_id: str) -> str:
        """Dedupe key of one Slack event (Events API retries), checked before the
        "thinking..." placeholder is posted. Event ids are unique per app."""
        return self._seen("slack", event_id)

    def slack_placeholder(self, conversation_id: str) -> str:
        """List: placeholder messages shown while a Slack conversation waits for a reply."""
        return f"{self.prefix}slack:placeholder:{conversation_id}"

    def telegram_typing(self, conversation_id: str) -> str:
        """Sorted set: a Telegram conversation's messages awaiting a reply, by arrival time;
        the processes that received them show "typing..." while one is younger than the
        adapter's typing limit (2 min by default), which is also the key's lifetime."""
        return f"{self.prefix}telegram:typing:{conversation_id}"

    def partial(self, channel: str, conversation_id: str, message_id: str) -> str:
        """Hash: the answer to one inbound message while it is generated (`text` so far,
        written by the brain worker), the process showing it (`owner`), the platform's id
        of the message showing it (`shown`), a showing call in flight (`busy`, its start
        time) and `final` once the sender delivers the reply. `PARTIAL_TTL_SECONDS`."""
        return f"{self.prefix}partial:{channel}:{conversation_id}:{message_id}"

    @property
    def partials(self) -> str:
        """Stream: one entry (channel, conversation, message) per new partial answer, read
        by every process with adapters; capped at `PARTIALS_MAXLEN`, holds no text."""
        return f"{self.prefix}partials"

    def queue(self, stream: str, channel: str, conversation_id: str) -> str:
        """List: the conversation's unfinished entry ids of `stream` (a stream key)."""
        return f"{stream}:{channel}:{conversation_id}"

    def legacy_queue(self, stream: str, conversation_id: str) -> str:
        """`queue` as named before it carried the channel."""
        return f"{stream}:{conversation_id}"

    def lock(self, stream: str, channel: str, conversation_id: str) -> str:
        """Lock: one worker (inbox) or sender (outbox) per conversation at a time."""
        name = "lock" if stream == self.inbox else "sendlock"
        return f"{self.prefix}{name}:{channel}:{conversation_id}"

    def delivery(self, entry_id: str) -> str:
        """Hash: one outbox entry's delivery record, written before each platform call
        (`attempts`) and after the platform took the reply (`delivered`: the platform's
        id of the message, e.g. Telegram's `message_id`s comma-separated or Slack's `ts`;
        1 where it gives none); deleted when the entry is finished, else after
        `DELIVERY_TTL_SECONDS`. A sender that takes the entry over reads it: delivered
        means finish without sending, an attempt means the reply may have arrived."""
        return f"{self.prefix}delivery:{entry_id}"

    def process(self, name: str) -> str:
        """Hash: a running process's heartbeat (for `deskmate status`)."""
        return f"{self.prefix}process:{name}"

    # -- conversations ----------------------------------------------------------------

    def conversation(self, channel: str, conversation_id: str) -> str:
        """List of JSON turns: recent history, trimmed, expiring when idle."""
        return f"{self.prefix}conv:{channel}:{conversation_id}"

    def legacy_conversation(self, conversation_id: str) -> str:
        """`conversation` as named before it carried the channel."""
        return f"{self.prefix}conv:{conversation_id}"

    def handoff(self, channel: str, conversation_id: str) -> str:
        """Hash: the conversation's handoff state machine record (`state`, `version`, times,
        agent, staff thread); absent while the bot has the conversation."""
        return f"{self.prefix}handoff:{channel}:{conversation_id}"

    @property
    def handoff_match(self) -> str:
        """SCAN pattern matching every handoff hash, of this version and earlier ones (and
        the staff-thread keys, which callers skip)."""
        return f"{self.prefix}handoff:*"

    def legacy_handoff(self, conversation_id: str) -> str:
        """`handoff` as named before it carried the channel."""
        return f"{self.prefix}handoff:{conversation_id}"

    def handoff_thread(self, ts: str) -> str:
        """String: the conversation an escalation's staff thread belongs to, as JSON
        `[channel, conversation id]` (a bare conversation id before channels were named)."""
        return f"{self.prefix}handoff:thread:{ts}"

    def handoff_record(self, handoff_id: str) -> str:
        """Hash: one finished handoff for analytics (times, outcome, agent, CSAT), kept
        `HANDOFF_RECORD_TTL_SECONDS`."""
        return f"{self.prefix}handoffs:record:{handoff_id}"

    @property
    def handoff_open(self) -> str:
        """Sorted set: open handoffs (`{channel}:{id}`) by the time they were requested."""
        return self.prefix + "handoffs:open"

    @property
    def handoff_waiting(self) -> str:
        """Sorted set: open handoffs nobody has claimed yet, by request time (the queue)."""
        return self.prefix + "handoffs:waiting"

    @property
    def handoff_claim_seconds(self) -> str:
        """List: seconds from request to claim of the latest handoffs (newest first,
        capped), what the typical wait told to customers is measured from."""
        return self.prefix + "handoffs:claim-seconds"

    @property
    def transcripts(self) -> str:
        """Stream: every turn, feedback and handoff event, for export and training."""
        return self.prefix + "transcripts"

    # -- insights (the report, the dashboard) -----------------------------------------

    def stats_day(self, day: str) -> str:
        """Hash: one UTC day's counters (`YYYY-MM-DD`), folded from the transcripts."""
        return f"{self.prefix}stats:day:{day}"

    @property
    def stats_cursor(self) -> str:
        """String: the last transcripts entry id folded into the day counters."""
        return self.prefix + "stats:cursor"

    @property
    def stats_open(self) -> str:
        """Hash: conversations still going (`{channel}:{id}` -> JSON fold state)."""
        return self.prefix + "stats:open"

    @property
    def stats_lock(self) -> str:
        """String with a TTL: the process folding new transcripts right now."""
        return self.prefix + "stats:lock"

    @property
    def stats_gaps(self) -> str:
        """List: questions the bot could not answer or that were rated 👎 (JSON, newest
        first, capped), what content gaps are clustered from."""
        return self.prefix + "stats:gaps"

    @property
    def faq_approvals(self) -> str:
        """List: every approved (or undone) dashboard FAQ entry, newest first (JSON: who,
        when, what)."""
        return self.prefix + "faq:approvals"

    @property
    def dashboard_secret(self) -> str:
        """String: the key signing dashboard sessions when none is configured."""
        return self.prefix + "dashboard:secret"

    # -- what every process follows ----------------------------------------------------

    @property
    def model_active(self) -> str:
        """String: the model version every process serves."""
        return self.prefix + "model:active"

    @property
    def classifier_active(self) -> str:
        """String: the mood classifier version every process serves."""
        return self.prefix + "classifier:active"

    @property
    def retriever_active(self) -> str:
        """String: the retrieval (embedding) model version every process searches with:
        `base`, or a version fine-tuned on the FAQ (`deskmate faq learn`)."""
        return self.prefix + "retriever:active"

    @property
    def faq_version(self) -> str:
        """String: content hash of the FAQ index every process serves."""
        return self.prefix + "faq:version"

    @property
    def faq_sync_lock(self) -> str:
        """String with a TTL: the process running this interval's scheduled source sync."""
        return self.prefix + "faq:sync-lock"

    @property
    def evaluation_prefix(self) -> str:
        """Prefix of `deskmate eval answers`' throwaway conversations (deleted after)."""
        return self.prefix + "eval:"
