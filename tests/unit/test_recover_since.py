"""`relay recover --since`: the text Frappe compares `creation` with (relay_cli.recover.site_time)."""

import pytest

from relay_cli.recover import site_time


@pytest.mark.parametrize(
    ("given", "zone", "expected"),
    [
        ("2026-12-01", None, "2026-12-01 00:00:00"),
        ("2026-12-01T09:30", None, "2026-12-01 09:30:00"),
        ("2026-12-01T04:00:00+00:00", "Asia/Kolkata", "2026-12-01 09:30:00"),
    ],
)
def test_since_becomes_the_sites_local_time(given: str, zone: str | None, expected: str) -> None:
    assert site_time(given, zone) == expected


@pytest.mark.parametrize(
    ("given", "zone", "reason"),
    [
        ("yesterday", None, "not an ISO date"),
        ("2026-12-01T04:00:00+00:00", None, "--site-timezone"),
        ("2026-12-01T04:00:00+00:00", "Mars/Olympus", "not a time zone"),
    ],
)
def test_a_since_it_cannot_place_is_refused_with_the_reason(
    given: str, zone: str | None, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        site_time(given, zone)
