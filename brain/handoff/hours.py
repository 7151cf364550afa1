"""When the support team works: weekly opening hours in one time zone, and holidays.

`DESKMATE_BUSINESS_HOURS` reads `DAYS HH:MM-HH:MM[; DAYS HH:MM-HH:MM ...] TIME/ZONE`, e.g.
`Mon-Fri 09:00-18:00 Europe/Berlin` or `Mon-Fri 09:00-17:30; Sat 10:00-14:00 Europe/Paris`;
DAYS is a day (`Sat` or `Saturday`), a range (`Mon-Fri`, `Sat-Mon` wraps) or a comma list
(`Mon,Wed,Fri`). A span ends on the day it starts (`24:00` ends a day); an overnight shift
is two spans. The zone is an IANA name (`UTC`, `America/New_York`). `DESKMATE_HOLIDAYS`
lists dates (`2026-12-25,2026-12-26`), closed all day in that zone. Unset hours mean
always open.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
LOOKAHEAD_DAYS = 400  # how far `next_open` looks (a year of holidays and then some)


@dataclass(frozen=True, slots=True)
class Opening:
    """Open on `weekdays` (0 = Monday) from `start` to `end` minutes after midnight."""

    weekdays: frozenset[int]
    start: int
    end: int


def _weekday(name: str) -> int:
    """0 for `Mon` or `Monday` (any case), ... 6 for `Sun`; anything else is an error."""
    key = name.strip().lower()
    if key in DAYS:
        return DAYS.index(key)
    if key in DAY_NAMES:
        return DAY_NAMES.index(key)
    raise ValueError(f"unknown day {name.strip()!r} (use Mon, Tue, ... Sun)")


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not dash:
            days.add(_weekday(first))
            continue
        start, end = _weekday(first), _weekday(last)
        span = range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)]
        days.update(span)
    return frozenset(days)


def _minutes(hours: str, minutes: str) -> int:
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > 24 * 60:
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return value


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Opening hours in one zone, closed on `holidays` (dates in that zone)."""

    openings: tuple[Opening, ...]
    zone: ZoneInfo
    holidays: frozenset[date] = frozenset()

    @classmethod
    def parse(cls, text: str, holidays: Sequence[date] = ()) -> BusinessHours:
        """Read `Mon-Fri 09:00-18:00 Europe/Berlin`; ValueError says what is wrong."""
        head, _, zone_name = text.strip().rpartition(" ")
        if not head or _SPAN.match(zone_name):
            raise ValueError(
                "must be like 'Mon-Fri 09:00-18:00 Europe/Berlin' (days, hours, time zone)"
            )
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {zone_name!r} (an IANA name such as Europe/Berlin or UTC)"
            ) from None
        openings = []
        for segment in head.split(";"):
            words = segment.split()
            if len(words) != 2:
                raise ValueError(
                    f"{segment.strip()!r} must be days and hours, e.g. Mon-Fri 09:00-18:00"
                )
            span = _SPAN.match(words[1])
            if span is None:
                raise ValueError(f"{words[1]!r} must be hours like 09:00-18:00")
            start, end = _minutes(span[1], span[2]), _minutes(span[3], span[4])
            if start >= end:
                raise ValueError(
                    f"{words[1]!r} must end after it starts on the same day (overnight: "
                    "split it, e.g. 'Mon-Fri 22:00-24:00; Tue-Sat 00:00-06:00')"
                )
            openings.append(Opening(_days(words[0]), start, end))
        return cls(tuple(openings), zone, frozenset(holidays))

    def _spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's opening spans as aware datetimes, none on a holiday."""
        if day in self.holidays:
            return []
        midnight = datetime.combine(day, time(0), tzinfo=self.zone)
        return sorted(
            (midnight + timedelta(minutes=o.start), midnight + timedelta(minutes=o.end))
            for o in self.openings
            if day.weekday() in o.weekdays
        )

    def is_open(self, when: datetime) -> bool:
        local = when.astimezone(self.zone)
        return any(start <= local < end for start, end in self._spans(local.date()))

    def next_open(self, when: datetime) -> datetime | None:
        """When the team is next at work: `when` itself if open now; None if never."""
        local = when.astimezone(self.zone)
        for offset in range(LOOKAHEAD_DAYS):
            for start, end in self._spans(local.date() + timedelta(days=offset)):
                if local < end:
                    return max(start, local)
        return None


def parse_holidays(text: str) -> tuple[date, ...]:
    """`2026-12-25,2026-12-26` as dates; ValueError names a bad one."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            found.append(date.fromisoformat(part))
        except ValueError:
            raise ValueError(f"{part!r} is not a date like 2026-12-25") from None
    return tuple(found)


def describe_reopening(at: datetime, now: datetime) -> str:
    """'today at 09:00', 'tomorrow at 09:00' or 'Monday 28 December at 09:00' (the zone's)."""
    local_now = now.astimezone(at.tzinfo or UTC)
    days = (at.date() - local_now.date()).days
    clock = at.strftime("%H:%M")
    if days == 0:
        return f"today at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    return f"{at.strftime('%A')} {at.day} {at.strftime('%B')} at {clock}"
