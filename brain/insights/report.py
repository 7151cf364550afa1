"""The figures support leads read (`deskmate report`, the dashboard overview), summed from
the day counters of `brain.insights.aggregates`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from brain.insights.aggregates import bucket_value


def _median(buckets: Mapping[int, int]) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen * 2 >= total:
            return round(bucket_value(bucket), 3)
    return None  # unreachable


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(slots=True)
class Report:
    """What the bot did between two days (inclusive)."""

    since: str
    until: str
    conversations: int = 0
    finished: int = 0  # conversations over (reset or idle), what the rates are of
    by_day: dict[str, dict[str, int]] = field(default_factory=dict)  # day -> channel -> n
    messages: dict[str, int] = field(default_factory=dict)  # customer messages by channel
    replies: dict[str, int] = field(default_factory=dict)  # by action (answer, ..., agent)
    answered_rate: float | None = None
    clarified_rate: float | None = None
    handed_off_rate: float | None = None
    resolved_by_bot_rate: float | None = None
    ratings: dict[str, int] = field(default_factory=dict)  # up / down
    median_first_reply_seconds: float | None = None
    handoffs: dict[str, int] = field(default_factory=dict)  # request, claim, resolve, ...
    median_time_to_claim_seconds: float | None = None
    median_time_to_resolve_seconds: float | None = None
    csat: dict[str, int] = field(default_factory=dict)  # rating -> count
    models: dict[str, int] = field(default_factory=dict)  # version -> bot replies
    handoff_reasons: dict[str, int] = field(default_factory=dict)  # reason kind -> handoffs
    moods: dict[str, int] = field(default_factory=dict)  # label -> customer messages
    moods_by_day: dict[str, dict[str, int]] = field(default_factory=dict)  # day -> label -> n
    mean_sentiment: float | None = None  # over the customer messages whose mood was read
    angry_message_rate: float | None = None  # of those messages, the ones that read angry
    angry_conversation_rate: float | None = None  # of finished conversations

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """The readable table `deskmate report` prints."""

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.1%}"

        def secs(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} s"

        lines = [
            f"deskmate report {self.since} .. {self.until}",
            f"conversations       {self.conversations} ({self.finished} finished)",
            f"answered            {pct(self.answered_rate)}",
            f"clarified           {pct(self.clarified_rate)}",
            f"handed off          {pct(self.handed_off_rate)}",
            f"resolved by the bot {pct(self.resolved_by_bot_rate)}",
            f"ratings             👍 {self.ratings.get('up', 0)}  👎 {self.ratings.get('down', 0)}",
            f"first reply (median) {secs(self.median_first_reply_seconds)}",
            "handoffs            "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.handoffs.items())) or "-"),
            f"time to claim (med) {secs(self.median_time_to_claim_seconds)}",
            f"time to resolve     {secs(self.median_time_to_resolve_seconds)}",
            "CSAT                "
            + (", ".join(f"{k}: {v}" for k, v in sorted(self.csat.items())) or "-"),
            "models              "
            + (", ".join(f"{k} ({v})" for k, v in sorted(self.models.items())) or "-"),
            "handoff reasons     "
            + (", ".join(f"{k} {v}" for k, v in _biggest(self.handoff_reasons)) or "-"),
            "moods               "
            + (", ".join(f"{k} {v}" for k, v in _biggest(self.moods)) or "-"),
            "sentiment (mean)    "
            + ("-" if self.mean_sentiment is None else f"{self.mean_sentiment:+.2f}"),
            f"angry messages      {pct(self.angry_message_rate)}",
            f"angry conversations {pct(self.angry_conversation_rate)}",
            "",
            "day         " + " ".join(f"{c:>9}" for c in self.channels),
        ]
        for day, counts in sorted(self.by_day.items()):
            lines.append(f"{day}  " + " ".join(f"{counts.get(c, 0):>9}" for c in self.channels))
        return "\n".join(lines)

    @property
    def channels(self) -> list[str]:
        return sorted({c for counts in self.by_day.values() for c in counts})


def _biggest(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def build_report(since: str, until: str, days: Mapping[str, Mapping[str, int]]) -> Report:
    """Sum the day counters into the report's figures."""
    total: Counter[str] = Counter()
    report = Report(since, until)
    for day, counters in sorted(days.items()):
        total.update(counters)
        per_channel = {
            name.partition(":")[2]: count
            for name, count in counters.items()
            if name.startswith("conversations:")
        }
        if per_channel:
            report.by_day[day] = per_channel
        moods = {
            name.partition(":")[2]: count
            for name, count in counters.items()
            if name.startswith("mood:") and count
        }
        if moods:
            report.moods_by_day[day] = moods

    def family(prefix: str) -> dict[str, int]:
        return {
            name[len(prefix) :]: count
            for name, count in total.items()
            if name.startswith(prefix) and count
        }

    def buckets(prefix: str) -> dict[int, int]:
        return {int(k): v for k, v in family(prefix).items()}

    report.conversations = total["conversations"]
    report.finished = finished = total["closed"]
    report.messages = family("messages:")
    report.replies = family("replies:")
    report.answered_rate = _rate(total["answered"], finished)
    report.clarified_rate = _rate(total["clarified"], finished)
    report.handed_off_rate = _rate(total["handed_off"], finished)
    report.resolved_by_bot_rate = _rate(total["resolved"], finished)
    report.ratings = {k: total[f"ratings:{k}"] for k in ("up", "down")}
    report.median_first_reply_seconds = _median(buckets("first_reply:"))
    report.handoffs = family("handoffs:")
    report.median_time_to_claim_seconds = _median(buckets("claim:"))
    report.median_time_to_resolve_seconds = _median(buckets("resolve:"))
    report.csat = family("csat:")
    report.models = family("model:")
    report.handoff_reasons = family("handoff_reason:")
    report.moods = family("mood:")
    read = total["mood_messages"]
    report.mean_sentiment = round(total["mood_sentiment_milli"] / 1000 / read, 3) if read else None
    report.angry_message_rate = _rate(total["angry_messages"], read)
    report.angry_conversation_rate = _rate(total["angry_conversations"], finished)
    return report
