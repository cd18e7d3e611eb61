"""The simulator's Get Shipment Info, its body limit, the faults the chaos run needs (2xx
answers that confirm nothing, novel status values) and seeded fault rates; without HTTP.

Time is a FakeClock moved by hand, so nothing here sleeps.
"""

import json
from collections.abc import Mapping
from typing import Any

import pytest

from fynd_simulator import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    INVOICE_PATH,
    UNCONFIRMED_SHAPES,
    CommitThenDropFault,
    ExpireTokensFault,
    Fault,
    NovelStatusFault,
    SimulatorConfigError,
    SimulatorState,
    StatusFault,
    UnconfirmedFault,
)
from fynd_simulator.faults import parse_fault
from fynd_simulator.replies import Reply


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SimulatorState:
    return SimulatorState(clock=clock)


@pytest.fixture
def token(state: SimulatorState) -> str:
    body = state.token_request(DEFAULT_USERNAME, DEFAULT_PASSWORD).body
    assert body is not None
    return str(body["access_token"])


def invoice(order_id: str, invoice_type: str = "sale") -> dict[str, object]:
    return {"orderId": order_id, "invoiceNumber": f"INV-{order_id}", "invoiceType": invoice_type}


def send(state: SimulatorState, token: str, body: object, fault: Fault | None = None) -> Reply:
    raw = json.dumps(body).encode()
    return state.invoice_update(path=INVOICE_PATH, query={}, token=token, raw_body=raw, fault=fault)


def read(
    state: SimulatorState, token: str | None, order_id: str | None, fault: Fault | None = None, **query: str
) -> Reply:
    given = {**({"orderId": order_id} if order_id else {}), **query}
    return state.shipment_info(query=given, token=token, fault=fault)


def entry(reply: Reply) -> Mapping[str, Any] | None:
    assert reply.status == 200
    assert reply.body is not None
    orders = reply.body["orders"]
    assert isinstance(orders, list)
    return orders[0] if orders else None


def statuses(reply: Reply) -> tuple[str, str] | None:
    found = entry(reply)
    return None if found is None else (found["orderStatus"], found["shipmentStatus"])


# --- Get Shipment Info ----------------------------------------------------------------------


def test_shipment_info_follows_the_order_through_its_invoice(state: SimulatorState, token: str) -> None:
    # Given a confirmed order
    assert statuses(read(state, token, "ORD-1")) == ("CONFIRMED", "bag_confirmed")
    # When it is invoiced
    send(state, token, [invoice("ORD-1")])
    # Then Shipment Info shows it invoiced, with its id, and the read is counted
    found = entry(read(state, token, "ORD-1"))
    assert found is not None
    assert (found["id"], found["orderStatus"], found["shipmentStatus"]) == (
        "ORD-1",
        "PROCESSING",
        "bag_invoiced",
    )
    assert state.stats().shipment_reads == 2
    assert state.order("ORD-1").reads == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("order_id", "expected"),
    [
        ("CANCELLED-1", ("CANCELLED", "cancelled_customer")),
        ("INVOICED-1", ("PROCESSING", "bag_invoiced")),
        ("BADINV-1", ("CONFIRMED", "bag_confirmed")),
        ("EARLY-1", ("CREATED", "placed")),
        ("RETURN-1", ("DELIVERED", "return_bag_accepted")),
        ("UNKNOWN-1", None),
    ],
)
def test_shipment_info_shows_each_prefix_state(
    state: SimulatorState, token: str, order_id: str, expected: tuple[str, str] | None
) -> None:
    assert statuses(read(state, token, order_id)) == expected


def test_an_early_order_confirms_after_contacts_by_read_or_invoice(state: SimulatorState, token: str) -> None:
    # Given an EARLY- order (confirmed after 2 contacts) answered IN403 once
    assert send(state, token, [invoice("EARLY-1")]).body["failedCount"] == 1  # type: ignore[index]
    # When Shipment Info is polled instead of sending again
    second = read(state, token, "EARLY-1")
    third = read(state, token, "EARLY-1")
    # Then the order confirms on the third contact, and one invoice then succeeds
    assert statuses(second) == ("CREATED", "placed")
    assert statuses(third) == ("CONFIRMED", "bag_confirmed")
    assert send(state, token, [invoice("EARLY-1")]).body["failedCount"] == 0  # type: ignore[index]
    assert state.invoice_count("EARLY-1") == 1


def test_an_order_confirmed_late_by_time_shows_it_on_read(
    state: SimulatorState, token: str, clock: FakeClock
) -> None:
    state.configure_order("LATE-1", confirm_after_seconds=1800)
    clock.now += 1799
    assert statuses(read(state, token, "LATE-1")) == ("CREATED", "placed")
    clock.now += 1
    assert statuses(read(state, token, "LATE-1")) == ("CONFIRMED", "bag_confirmed")


def test_a_credit_note_shows_credit_note_generated(state: SimulatorState, token: str) -> None:
    state.configure_order("RET-1", kind="return")
    assert statuses(read(state, token, "RET-1")) == ("DELIVERED", "return_bag_accepted")
    # A sale invoice for a return shipment meets the forward leg's invoice, as the read shows
    assert send(state, token, [invoice("RET-1")]).body["errors"][0]["code"] == "IN453"  # type: ignore[index]
    send(state, token, [invoice("RET-1", "return")])
    assert state.invoice_count("RET-1") == 1
    assert statuses(read(state, token, "RET-1")) == ("DELIVERED", "credit_note_generated")
    # A forward order invoiced by a return invoice shows the credit note too
    send(state, token, [invoice("ORD-2", "return")])
    assert statuses(read(state, token, "ORD-2")) == ("DELIVERED", "credit_note_generated")


def test_a_cancelled_order_and_one_of_another_location(state: SimulatorState, token: str) -> None:
    state.configure_orders({"C-1": {"state": "cancelled"}, "L-1": {"location": "LOC-B"}})
    assert statuses(read(state, token, "C-1")) == ("CANCELLED", "cancelled_customer")
    assert statuses(read(state, token, "L-1", locationCode="LOC-A")) is None
    assert statuses(read(state, token, "L-1", locationCode="LOC-B")) == ("CONFIRMED", "bag_confirmed")


def test_shipment_info_needs_a_live_token_and_an_order_id(state: SimulatorState, token: str) -> None:
    assert read(state, None, "ORD-1").status == 401
    assert read(state, "forged", "ORD-1").status == 401
    assert read(state, token, None).status == 400


def test_shipment_faults_5xx_429_drop_and_expiry(state: SimulatorState, token: str) -> None:
    failed = read(state, token, "ORD-1", StatusFault(503, endpoint="shipment"))
    throttled = read(state, token, "ORD-1", StatusFault(429, 4, endpoint="shipment"))
    dropped = read(state, token, "ORD-1", CommitThenDropFault(endpoint="shipment"))
    expired = read(state, token, "ORD-1", ExpireTokensFault(endpoint="shipment"))
    assert (failed.status, throttled.status, dropped.drop, expired.status) == (503, 429, True, 401)
    assert ("Retry-After", "4") in throttled.headers
    assert state.stats().shipment_reads == 4


def test_a_novel_status_is_never_one_used_before(state: SimulatorState, token: str) -> None:
    # When two reads meet a novel_status fault, one on each field
    first = statuses(read(state, token, "ORD-1", NovelStatusFault()))
    second = statuses(read(state, token, "ORD-1", NovelStatusFault("shipmentStatus")))
    # Then every value is new, and the untouched field keeps the real state
    assert first is not None
    assert second is not None
    assert first[0].startswith("SIM_NOVEL_")
    assert first[1].startswith("bag_sim_novel_")
    assert second[0] == "CONFIRMED"
    assert second[1] != first[1]
    known = {"CREATED", "CONFIRMED", "PROCESSING", "CANCELLED", "DELIVERED"}
    assert not ({first[0]} & known)


# --- Update Invoice: answers that confirm nothing, and the body limit --------------------------


@pytest.mark.parametrize("shape", UNCONFIRMED_SHAPES)
def test_an_unconfirmed_answer_commits_yet_confirms_nothing(
    state: SimulatorState, token: str, shape: str
) -> None:
    # Given an order that will succeed and one that is cancelled
    # When the call meets an unconfirmed fault that commits
    reply = send(state, token, [invoice("ORD-1"), invoice("CANCELLED-1")], UnconfirmedFault(shape))
    # Then ORD-1 is invoiced, the answer is a 200, and it does not hold the real confirmation
    assert reply.status == 200
    assert state.invoice_count("ORD-1") == 1
    real = {"payloadCount": 2, "successCount": 1, "failedCount": 1, "status": "PARTIAL"}
    body = dict(reply.body or {})
    assert {k: body.get(k) for k in real} != real
    assert state.calls()[0].fault == "unconfirmed"
    assert state.stats().faulted_calls == {"unconfirmed": 1}


def test_unconfirmed_shapes_look_as_named(state: SimulatorState, token: str) -> None:
    two = [invoice("ORD-1"), invoice("CANCELLED-1")]
    assert send(state, token, two, UnconfirmedFault("empty")).body == {}
    assert send(state, token, two, UnconfirmedFault("data_null", commit=False)).body == {"data": None}
    failed_some = send(
        state, token, [invoice("CANCELLED-2"), invoice("CANCELLED-3")], UnconfirmedFault("failed_some")
    )
    assert failed_some.body == {
        "status": "FAILED",
        "errors": [
            {"orderId": "CANCELLED-2", "code": "IN401", "message": "Order or order item already cancelled"}
        ],
    }
    counts = send(state, token, [invoice("ORD-9")], UnconfirmedFault("string_counts")).body
    assert counts is not None
    assert counts["failedCount"] == "0"


def test_an_unconfirmed_answer_without_commit_applies_nothing(state: SimulatorState, token: str) -> None:
    reply = send(state, token, [invoice("ORD-1")], UnconfirmedFault("empty", commit=False))
    assert (reply.status, reply.body) == (200, {})
    assert state.invoice_count("ORD-1") == 0


def test_a_body_above_the_limit_gets_a_whole_call_413(state: SimulatorState, token: str) -> None:
    # Given a limit exactly the size of a one-invoice body
    limit = len(json.dumps([invoice("ORD-1")]).encode())
    state.configure(max_body_bytes=limit)
    # When a body at the limit and one above it are sent
    at_limit = send(state, token, [invoice("ORD-1")])
    above = send(state, token, [invoice("ORD-2"), invoice("ORD-3")])
    # Then the first is answered, the second refused whole, applied nowhere, and recorded
    assert at_limit.status == 200
    assert above.status == 413
    assert state.invoice_count("ORD-2") == 0
    assert state.calls()[1].status == 413
    # And 0 turns the limit off
    state.configure(max_body_bytes=0)
    assert send(state, token, [invoice("ORD-2"), invoice("ORD-3")]).status == 200


# --- fault rates ------------------------------------------------------------------------------


def test_fault_rates_draw_faults_when_none_is_queued(state: SimulatorState) -> None:
    # Given a certain 503 for Shipment Info and an impossible drop for Update Invoice
    state.configure(
        fault_rates=[
            {"rate": 1, "fault": {"kind": "status", "status": 503, "endpoint": "shipment"}},
            {"rate": 0, "fault": {"kind": "commit_then_drop"}},
        ]
    )
    state.add_faults([{"kind": "status", "status": 500, "endpoint": "shipment"}])
    # When faults are taken: the queued one first, then the drawn ones
    assert state.take_fault("shipment") == StatusFault(500, endpoint="shipment")
    assert state.take_fault("shipment") == StatusFault(503, endpoint="shipment")
    assert state.take_fault("invoice") is None
    assert state.take_fault("token") is None


def test_fault_rates_repeat_with_the_same_seed(state: SimulatorState) -> None:
    rates = [{"rate": 0.3, "fault": {"kind": "unconfirmed", "shape": "any"}}]
    state.configure(fault_rates=rates, seed=7)
    first = [state.take_fault("invoice") is not None for _ in range(200)]
    state.configure(seed=7)
    second = [state.take_fault("invoice") is not None for _ in range(200)]
    assert first == second
    assert 20 < sum(first) < 100  # drawn, not all or nothing


@pytest.mark.parametrize(
    "config",
    [
        {"fault_rates": {"rate": 1}},
        {"fault_rates": [{"rate": 1.5, "fault": {"kind": "commit_then_drop"}}]},
        {"fault_rates": [{"rate": 0.5, "fault": {"kind": "nope"}}]},
        {"max_body_bytes": -1},
        {"max_body_bytes": True},
        {"seed": "seven"},
    ],
)
def test_invalid_configuration_is_refused_whole(state: SimulatorState, config: dict[str, Any]) -> None:
    with pytest.raises(SimulatorConfigError):
        state.configure(envelope="snake", **config)
    assert state.envelope == "camel"
    assert state.fault_rates == ()


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "unconfirmed", "shape": "weird"},
        {"kind": "unconfirmed", "commit": "yes"},
        {"kind": "unconfirmed", "endpoint": "shipment"},
        {"kind": "novel_status", "endpoint": "invoice"},
        {"kind": "novel_status", "field": "sla"},
    ],
)
def test_an_invalid_new_fault_is_refused(raw: object) -> None:
    with pytest.raises(SimulatorConfigError):
        parse_fault(raw)


def test_new_faults_parse_with_their_defaults() -> None:
    assert parse_fault({"kind": "unconfirmed"}) == UnconfirmedFault("any", True)
    assert parse_fault({"kind": "novel_status"}) == NovelStatusFault("both")


# --- the simulator agrees with itself ----------------------------------------------------------


@pytest.mark.parametrize("invoice_type", ["sale", "return"])
@pytest.mark.parametrize(
    "config",
    [
        {"state": "pending"},
        {"state": "confirmed"},
        {"state": "invoiced"},
        {"state": "cancelled"},
        {"state": "bad_invoice"},
        {"state": "unknown"},
        {"state": "pending", "kind": "return"},
        {"state": "confirmed", "kind": "return"},
        {"state": "cancelled", "kind": "return"},
    ],
)
def test_what_shipment_info_proves_is_what_update_invoice_then_answers(
    state: SimulatorState, token: str, config: dict[str, str], invoice_type: str
) -> None:
    # Given an order in some state, read and classified as the relay does
    from relay.adapters.fynd_answers import read_shipment_info
    from relay.domain.invoice import InvoiceType
    from relay.domain.shipment import ShipmentState, classify_shipment

    state.configure_orders({"O-1": config})
    raw = json.dumps(read(state, token, "O-1").body).encode()
    proved = classify_shipment(read_shipment_info("O-1", raw), InvoiceType(invoice_type))
    # When that invoice is sent
    answer = send(state, token, [invoice("O-1", invoice_type)]).body or {}
    code = next(iter(e["code"] for e in answer["errors"]), None)  # type: ignore[attr-defined]
    # Then the proof held: invoiced means IN453, cancelled IN401, not yet confirmed IN403,
    # and ready means Fynd took it (or refused the invoice itself)
    expected = {
        ShipmentState.INVOICED: {"IN453"},
        ShipmentState.CANCELLED: {"IN401"},
        ShipmentState.NOT_INVOICED: {"IN403"},
        ShipmentState.READY: {None, "IN422"},
    }
    assert code in expected.get(proved, {None, "IN400", "IN401", "IN403", "IN422", "IN453"})
