"""Business hours and holidays: parsing (DESKMATE_BUSINESS_HOURS / DESKMATE_HOLIDAYS),
whether the team is in, and when it is next, across weekends, holidays and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from brain.handoff.hours import BusinessHours, describe_reopening, parse_holidays
from brain.settings import Settings, SettingsError

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_one_span_in_a_time_zone() -> None:
    hours = BusinessHours.parse("Mon-Fri 09:00-18:00 Europe/Berlin")
    assert hours.zone.key == "Europe/Berlin"
    assert hours.is_open(berlin(2026, 11, 30, 9, 0))  # a Monday, at opening
    assert hours.is_open(berlin(2026, 11, 30, 17, 59))
    assert not hours.is_open(berlin(2026, 11, 30, 18, 0))  # the end is exclusive
    assert not hours.is_open(berlin(2026, 11, 30, 8, 59))
    assert not hours.is_open(berlin(2026, 12, 5, 12, 0))  # Saturday
    # The time zone counts, not the caller's: 08:30 UTC is 09:30 in Berlin in winter.
    assert hours.is_open(datetime(2026, 11, 30, 8, 30, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 11, 30, 7, 30, tzinfo=UTC))


def test_several_spans_separated_by_semicolons_and_day_lists() -> None:
    hours = BusinessHours.parse(
        "Mon-Fri 09:00-12:30; mon,wed 14:00-18:00;Sat 10:00-14:00; Sunday 11:00-24:00 UTC"
    )
    monday, tuesday = datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    assert hours.is_open(monday.replace(hour=12)) and not hours.is_open(monday.replace(hour=13))
    assert hours.is_open(monday.replace(hour=15))  # Monday afternoon
    assert not hours.is_open(tuesday.replace(hour=15))  # not Tuesday's
    assert hours.is_open(datetime(2026, 12, 5, 13, 59, tzinfo=UTC))  # Saturday
    assert hours.is_open(datetime(2026, 12, 6, 23, 59, tzinfo=UTC))  # until midnight Sunday
    # A day range may wrap around the weekend.
    weekend = BusinessHours.parse("Sat-Mon 10:00-11:00 UTC")
    open_days = {d for d in range(7) if weekend.is_open(monday.replace(hour=10) + timedelta(d))}
    assert open_days == {0, 5, 6}  # Monday, Saturday, Sunday


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Mon-Fri 22:00-06:00 UTC", "must end after it starts on the same day (overnight"),
        ("Mon-Fri 18:00-09:00 UTC", "must end after it starts"),
        ("Mon-Fri 09:00-09:00 UTC", "must end after it starts"),
        ("Mon-Fri 09:00-25:00 UTC", "25:00 is not a time of day"),
        ("Mon-Fri 09:60-18:00 UTC", "09:60 is not a time of day"),
        ("Mon-Fri 24:30-24:45 UTC", "24:30 is not a time of day"),
        ("Mon-Fri 9-18 UTC", "'9-18' must be hours like 09:00-18:00"),
        ("Mon-Fri 09:00 to 18:00 UTC", "must be days and hours"),
        ("Mon-Fir 09:00-18:00 UTC", "unknown day 'Fir'"),
        ("Monkey 09:00-18:00 UTC", "unknown day 'Monkey'"),
        ("Mon,,Fri 09:00-18:00 UTC", "unknown day ''"),
        ("Mon-Fri 09:00-18:00 Europe/Berlinn", "unknown time zone 'Europe/Berlinn'"),
        ("Mon-Fri 09:00-18:00 Berlin", "unknown time zone 'Berlin'"),
        ("Mon-Fri 09:00-18:00", "must be like 'Mon-Fri 09:00-18:00 Europe/Berlin'"),
        ("Europe/Berlin", "must be like"),
        ("Mon-Fri 09:00-12:00; Europe/Berlin", "must be days and hours"),
        ("Mon-Fri 09:00-12:00;; Sat 10:00-12:00 UTC", "'' must be days and hours"),
    ],
)
def test_malformed_hours_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError) as raised:
        BusinessHours.parse(text)
    assert says in str(raised.value)


def test_holidays_parse_and_a_bad_date_is_named() -> None:
    assert parse_holidays(" 2026-12-25, 2026-12-26 ,") == (date(2026, 12, 25), date(2026, 12, 26))
    with pytest.raises(ValueError, match="'2026-12-32' is not a date like 2026-12-25"):
        parse_holidays("2026-12-25,2026-12-32")
    with pytest.raises(ValueError, match="'25/12/2026' is not a date"):
        parse_holidays("25/12/2026")


def test_settings_errors_name_the_variable() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.load({"DESKMATE_BUSINESS_HOURS": "Mon-Fri 09:00-18:00 Mars/Olympus"})
    message = str(raised.value)
    assert message.startswith("DESKMATE_BUSINESS_HOURS ")
    assert "unknown time zone 'Mars/Olympus'" in message
    with pytest.raises(SettingsError) as raised:
        Settings.load({"DESKMATE_HOLIDAYS": "2026-12-25,xmas"})
    assert str(raised.value).startswith("DESKMATE_HOLIDAYS ")
    assert "'xmas' is not a date" in str(raised.value)


def test_settings_combine_hours_and_holidays() -> None:
    settings = Settings.load(
        {
            "DESKMATE_BUSINESS_HOURS": "Mon-Fri 09:00-17:00; Sat 10:00-14:00 Europe/Paris",
            "DESKMATE_HOLIDAYS": "2026-12-25",
        }
    )
    hours = settings.opening_hours
    assert hours is not None and hours.holidays == {date(2026, 12, 25)}
    assert not hours.is_open(datetime(2026, 12, 25, 10, tzinfo=ZoneInfo("Europe/Paris")))
    assert hours.is_open(datetime(2026, 12, 26, 10, tzinfo=ZoneInfo("Europe/Paris")))
    # Unset hours: always open, whatever the holidays.
    assert Settings.load({"DESKMATE_HOLIDAYS": "2026-12-25"}).opening_hours is None


def test_next_opening_across_a_weekend_when_the_clocks_change() -> None:
    hours = BusinessHours.parse("Mon-Fri 09:00-18:00 Europe/Berlin")
    # Friday 23 October 2026 after closing; summer time ends on Sunday the 25th.
    friday_evening = berlin(2026, 10, 23, 18, 30)
    assert friday_evening.utcoffset() == timedelta(hours=2)
    back = hours.next_open(friday_evening)
    assert back == berlin(2026, 10, 26, 9, 0)
    assert back is not None and back.utcoffset() == timedelta(hours=1)
    assert back.astimezone(UTC) == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)  # not 07:00
    assert describe_reopening(back, friday_evening) == "Monday 26 October at 09:00"
    # Spring: the Monday after the change opens at 09:00 summer time (07:00 UTC).
    spring = hours.next_open(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert spring is not None and spring.astimezone(UTC) == datetime(2026, 3, 30, 7, tzinfo=UTC)
    # Open now: now. Before opening on a working day: today.
    now = berlin(2026, 10, 26, 10, 15)
    assert hours.next_open(now) == now
    early = berlin(2026, 10, 27, 7, 0)
    assert describe_reopening(hours.next_open(early) or early, early) == "today at 09:00"
    late = berlin(2026, 10, 27, 19, 0)
    assert describe_reopening(hours.next_open(late) or late, late) == "tomorrow at 09:00"


def test_next_opening_skips_holidays_and_the_weekend_after_them() -> None:
    hours = BusinessHours.parse(
        "Mon-Fri 09:00-18:00 Europe/Berlin",
        holidays=(date(2026, 12, 24), date(2026, 12, 25)),
    )
    wednesday_evening = berlin(2026, 12, 23, 19, 0)
    back = hours.next_open(wednesday_evening)
    assert back == berlin(2026, 12, 28, 9, 0)  # Thu, Fri holidays; Sat, Sun closed
    assert describe_reopening(back, wednesday_evening) == "Monday 28 December at 09:00"
    assert not hours.is_open(berlin(2026, 12, 24, 10, 0))
    # From UTC, late on the 23rd in Berlin already (23:30 UTC is 00:30 on the 24th).
    assert hours.next_open(datetime(2026, 12, 23, 23, 30, tzinfo=UTC)) == back
    # Every day a holiday: never (None), not a loop without end.
    closed = BusinessHours.parse(
        "Mon 09:00-10:00 UTC",
        holidays=tuple(date(2026, 1, 5) + timedelta(weeks=n) for n in range(60)),
    )
    assert closed.next_open(datetime(2026, 1, 1, tzinfo=UTC)) is None
