"""The dispatcher's deployed defaults against Fynd's pace (issue 19, docs/scale.md).

The shared pace (relay.adapters.rate, `FyndCallsPerSecond`) bounds the rate towards Fynd;
`DispatchMaxConcurrency` must only keep enough calls in flight to use it. By Little's law the
calls in flight are the pace times the mean time a call holds its thread, and a lost answer
holds it for the whole request (connect and read timeouts).
"""

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
