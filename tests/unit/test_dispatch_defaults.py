"""The dispatcher's deployed defaults against Fynd's pace (issue 19, docs/scale.md).

The shared pace (relay.adapters.rate, `FyndCallsPerSecond`) bounds the rate towards Fynd;
`DispatchMaxConcurrency` must only keep enough calls in flight to use it. By Little's law the
calls in flight are the pace times the mean time a call holds its thread, and a lost answer
holds it for the whole request (connect and read timeouts).
"""

import pytest

from relay import wiring
from relay.settings import DispatchSettings
from world.template import read_template

LOST_SHARE = 0.05
"""The share of Fynd's answers lost in the sale day of issue 19."""
ANSWERED_SECONDS = 0.2
"""A Fynd call's median time when answered (tests/world/clock.py)."""


def test_the_default_dispatchers_keep_enough_calls_in_flight_to_use_fynds_pace() -> None:
    # Given the template's defaults and the Fynd client's timeouts
    template = read_template()
    defaults = DispatchSettings.model_fields
    request_seconds = float(defaults["fynd_connect_timeout_seconds"].default) + float(
        defaults["fynd_read_timeout_seconds"].default
    )
    pace = float(template.parameters["FyndCallsPerSecond"])

    # When 5 % of the answers are lost, each holding its call for the whole request
    mean_call_seconds = (1 - LOST_SHARE) * ANSWERED_SECONDS + LOST_SHARE * request_seconds
    needed = pace * mean_call_seconds

    # Then the dispatchers' calls in flight cover what the pace needs
    in_flight = template.max_concurrency * wiring.FYND_CALLS_IN_FLIGHT
    assert in_flight >= needed, (in_flight, needed)


def _settings(**environment: str) -> DispatchSettings:
    return DispatchSettings.model_validate(
        {
            "LEDGER_TABLE_NAME": "ledger",
            "INVOICE_QUEUE_URL": "http://127.0.0.1/queue",
            "FYND_BASE_URL": "https://fynd.example",
            "FYND_CREDENTIALS_SECRET_ARN": "arn:secret",
            "TOO_EARLY_DEADLINE_SECONDS": "86400",
            "MAX_RECEIVE_COUNT": "8",
            "FYND_RATE_TABLE_NAME": "rate",
            **environment,
        }
    )


def test_shipment_info_reads_get_their_own_pace_unless_set_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the rate table, and FyndReadsPerSecond at the template's default or at 0
    monkeypatch.setattr(wiring, "_dynamodb", lambda: None)
    default = read_template().parameters["FyndReadsPerSecond"]

    # When the dispatcher's limiters are built
    monkeypatch.setattr(
        wiring,
        "dispatch_settings",
        lambda: _settings(FYND_CALLS_PER_SECOND="10", FYND_READS_PER_SECOND=default),
    )
    own = wiring._read_limiter()
    monkeypatch.setattr(wiring, "dispatch_settings", lambda: _settings(FYND_READS_PER_SECOND="0"))
    shared = wiring._read_limiter()

    # Then the default paces the reads apart, at their own rate (not the calls' 10/s); 0 leaves
    # them on the calls' pace
    assert own is not None
    assert own._interval == 1 / float(default)
    assert shared is None
