"""The world's Fynd counts Update Invoice calls against the credential's limit and Shipment Info
reads against a limit of their own, or, when it has none (`read_rate_per_second` None), against
the calls' (tests/world/fynd.py). Fynd publishes neither: both readings are runnable."""

import pytest

from factories import invoice
from relay.domain.fynd import FyndCall, FyndThrottled
from relay.domain.invoice import InvoiceType
from world.clock import Latencies, WorldClock
from world.fynd import WorldFynd


def fynd(read_rate: float | None) -> WorldFynd:
    return WorldFynd(WorldClock(), Latencies(1), rate_per_second=1, read_rate_per_second=read_rate)


def call(order_id: str) -> FyndCall:
    return FyndCall(None, InvoiceType.SALE, (invoice(order_id),))


def test_a_read_has_its_own_limit_beside_the_calls() -> None:
    # Given a Fynd that allows one call and one read a second
    world = fynd(read_rate=1)
    # When a call and then a read go out in the same second
    world.update_invoices(call("A"), time_budget_seconds=30)
    info = world.shipment_info("A", None, time_budget_seconds=30)
    # Then both are answered; a second call that second is refused
    assert (info.found, info.bag_status) == (True, "bag_invoiced")
    with pytest.raises(FyndThrottled):
        world.update_invoices(call("B"), time_budget_seconds=30)
    assert (world.requests["calls"], world.requests["reads"], world.requests["throttled"]) == (1, 1, 1)


def test_a_read_counts_with_the_calls_when_fynd_has_one_limit() -> None:
    # Given a Fynd that counts calls and reads together, one a second
    world = fynd(read_rate=None)
    # When a call and then a read go out in the same second
    world.update_invoices(call("A"), time_budget_seconds=30)
    # Then the read is refused 429
    with pytest.raises(FyndThrottled):
        world.shipment_info("A", None, time_budget_seconds=30)
    assert (world.requests["calls"], world.requests["reads"], world.requests["throttled"]) == (1, 0, 1)
