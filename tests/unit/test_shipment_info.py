"""Issue 7: Get Shipment Info, read defensively, and what an answer proves; and (issue 18) the
dispatcher's read before a resend: where it asks, the time and pace it keeps, what it logs.

Only positive proof may stop a send: an unknown value, a missing field or two fields that
disagree prove nothing (UNKNOWN)."""

import json
from collections.abc import Callable
from typing import Any

import pytest
import urllib3

from factories import invoice
from fakes import FakeClock, InMemoryRateLimiter, ScriptedFynd, World, lost_answer
from relay.adapters.fynd import SHIPMENT_INFO_PATH, Credentials, FyndClient
from relay.domain.dispatch import MIN_READ_SECONDS
from relay.domain.fynd import FyndAuthError, FyndCallError, FyndNotSent, FyndThrottled, FyndUnavailable
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import QueuedInvoice
from relay.domain.shipment import ShipmentInfo, ShipmentState, classify_shipment

SALE, RETURN = InvoiceType.SALE, InvoiceType.RETURN


def info(order_status: str | None = None, bag: str | None = None) -> ShipmentInfo:
    return ShipmentInfo("A", found=True, order_status=order_status, bag_status=bag)


@pytest.mark.parametrize(
    ("order_status", "bag", "expected"),
    [
        ("PROCESSING", "bag_invoiced", ShipmentState.INVOICED),
        (None, "dp_assigned", ShipmentState.INVOICED),
        ("DELIVERED", None, ShipmentState.INVOICED),
        ("DISPATCHED", "bag_packed", ShipmentState.INVOICED),
        ("CANCELLED", None, ShipmentState.CANCELLED),
        (None, "cancelled_customer", ShipmentState.CANCELLED),
        ("CONFIRMED", "bag_confirmed", ShipmentState.READY),
        ("PROCESSING", "bag_confirmed", ShipmentState.READY),
        ("CONFIRMED", None, ShipmentState.READY),
        ("CREATED", "placed", ShipmentState.NOT_INVOICED),
        ("CONFIRMED", "placed", ShipmentState.NOT_INVOICED),
        ("PROCESSING", None, ShipmentState.UNKNOWN),  # confirmed or invoiced: proves neither
        (None, None, ShipmentState.UNKNOWN),
        ("SHIPPED_TO_MARS", None, ShipmentState.UNKNOWN),
        ("SHIPPED_TO_MARS", "bag_invoiced", ShipmentState.UNKNOWN),  # an unknown status vouches for nothing
        ("CONFIRMED", "bag_teleported", ShipmentState.UNKNOWN),
        ("DELIVERED", "bag_teleported", ShipmentState.UNKNOWN),
        ("CREATED", "bag_invoiced", ShipmentState.UNKNOWN),  # fields disagree
        ("CANCELLED", "bag_invoiced", ShipmentState.UNKNOWN),
        (None, "bag_picked", ShipmentState.UNKNOWN),  # left out on purpose
    ],
)
def test_what_a_sale_shipment_proves(
    order_status: str | None, bag: str | None, expected: ShipmentState
) -> None:
    assert classify_shipment(info(order_status, bag), SALE) is expected


@pytest.mark.parametrize(
    ("bag", "expected"),
    [
        ("credit_note_generated", ShipmentState.INVOICED),
        ("return_bag_accepted", ShipmentState.READY),
        ("rto_bag_accepted", ShipmentState.READY),
        ("return_bag_in_transit", ShipmentState.NOT_INVOICED),
        ("return_request_cancelled", ShipmentState.CANCELLED),
        ("bag_invoiced", ShipmentState.UNKNOWN),  # the sale's invoice says nothing of a credit note
        ("refund_done", ShipmentState.UNKNOWN),
        (None, ShipmentState.UNKNOWN),
    ],
)
def test_what_a_return_shipment_proves_for_a_credit_note(bag: str | None, expected: ShipmentState) -> None:
    # The orderStatus describes the forward order: it never proves a credit note
    assert classify_shipment(info("DELIVERED", bag), RETURN) is expected


def test_an_order_missing_from_the_answer_proves_nothing() -> None:
    assert classify_shipment(ShipmentInfo("A", found=False), SALE) is ShipmentState.UNKNOWN
    assert not ShipmentState.UNKNOWN.proves_not_invoiced
    assert ShipmentState.READY.proves_not_invoiced
    assert ShipmentState.NOT_INVOICED.proves_not_invoiced


class FakePool:
    def __init__(self, *replies: urllib3.HTTPResponse | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **options: Any) -> urllib3.HTTPResponse:
        self.requests.append({"method": method, "url": url, **options})
        answer = self.replies.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> urllib3.HTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return urllib3.HTTPResponse(body=data, status=status, headers=headers or {}, preload_content=True)


def token(value: str = "tok") -> urllib3.HTTPResponse:
    return reply(200, {"access_token": value, "expires_in": 3600})


class OneCredential:
    def for_location(self, location_code: str | None) -> Credentials:
        return Credentials("user", "password", location_code)


def read(pool: FakePool, order_id: str = "A", location: str | None = None) -> ShipmentInfo:
    client = FyndClient("https://fynd.test", OneCredential(), http=pool)  # type: ignore[arg-type]
    return client.shipment_info(order_id, location, time_budget_seconds=30)


def test_shipment_info_is_a_get_by_order_and_location_with_the_token() -> None:
    # Given Fynd knows A as confirmed
    entry = {"id": "A", "orderStatus": "confirmed", "shipmentStatus": "BAG_CONFIRMED", "lockStatus": False}
    pool = FakePool(token(), reply(200, {"orders": [entry]}))
    # When A is read for location WH-1
    found = read(pool, "A", "WH-1")
    # Then one GET names the order and location, with the token, and the fields are normalised
    request = pool.requests[1]
    assert (request["method"], request["url"]) == (
        "GET",
        f"https://fynd.test{SHIPMENT_INFO_PATH}?orderId=A&locationCode=WH-1",
    )
    assert request["headers"]["x-access-token"] == "tok"
    assert request["retries"] is False
    assert found == ShipmentInfo("A", True, "CONFIRMED", "bag_confirmed", None, False)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"data": {"orders": [{"orderId": "A", "status": "bag_invoiced"}]}},
            ShipmentInfo("A", True, None, "bag_invoiced"),
        ),
        ({"data": [{"order_id": "A", "order_status": "PROCESSING"}]}, ShipmentInfo("A", True, "PROCESSING")),
        (
            {"orders": [{"id": "A", "shipmentStatus": {"status": "bag_packed"}}]},
            ShipmentInfo("A", True, None, "bag_packed"),
        ),
        ({"orders": [{"id": "B", "orderStatus": "DELIVERED"}]}, ShipmentInfo("A", False)),  # not our order
        ({"orders": [{"orderStatus": "DELIVERED"}]}, ShipmentInfo("A", False)),  # names no order
        ({"orders": []}, ShipmentInfo("A", False)),
        ({"orders": "none"}, ShipmentInfo("A", False)),
        (b"<html>", ShipmentInfo("A", False)),
        (
            {"orders": [{"id": "A", "orderStatus": "CONFIRMED"}, {"id": "A", "orderStatus": "DELIVERED"}]},
            ShipmentInfo("A", True),  # two entries disagree: proves nothing
        ),
        ({"orders": [{"id": "A", "orderStatus": 7}]}, ShipmentInfo("A", True, "?UNREADABLE")),
    ],
)
def test_shipment_info_is_read_defensively(body: Any, expected: ShipmentInfo) -> None:
    assert read(FakePool(token(), reply(200, body))) == expected


def test_an_unreadable_value_proves_nothing() -> None:
    found = read(FakePool(token(), reply(200, {"orders": [{"id": "A", "orderStatus": ["DELIVERED"]}]})))
    assert classify_shipment(found, SALE) is ShipmentState.UNKNOWN


def test_a_404_is_an_order_not_found() -> None:
    assert read(FakePool(token(), reply(404, {}))) == ShipmentInfo("A", False)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (reply(429, {}, {"Retry-After": "3"}), FyndThrottled),
        (reply(503, {}), FyndUnavailable),
        (reply(400, {}), FyndCallError),
        (urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"), FyndUnavailable),  # type: ignore[arg-type]
        (urllib3.exceptions.ProtocolError("dropped"), FyndUnavailable),
        (urllib3.exceptions.NewConnectionError(None, "refused"), FyndNotSent),  # type: ignore[arg-type]
    ],
)
def test_shipment_info_failures_are_typed(
    answer: urllib3.HTTPResponse | Exception, error: type[FyndCallError]
) -> None:
    with pytest.raises(error) as failed:
        read(FakePool(token(), answer))
    assert failed.type is error


def test_shipment_info_refreshes_an_expired_token_once() -> None:
    pool = FakePool(token("old"), reply(401, {}), token("new"), reply(200, {"orders": []}))
    read(pool)
    assert [r["headers"]["x-access-token"] for r in pool.requests if "headers" in r] == ["old", "new"]
    with pytest.raises(FyndAuthError):
        read(FakePool(token("old"), reply(401, {}), token("new"), reply(403, {})))


# ---- the dispatcher's read before a resend ----


def key(order_id: str, invoice_type: InvoiceType = SALE) -> InvoiceKey:
    return InvoiceKey(order_id, invoice_type)


def in_doubt(world: World, order: str = "A", *, location: str | None = None) -> None:
    """The order was sent once and its answer lost before Fynd applied it: RETRYING, in doubt
    (its retry reads Shipment Info first), due now."""
    world.accept(invoice(order, locationCode=location))
    world.faults.fail("fynd.before", lost_answer())
    world.run()
    assert world.status(key(order)) is InvoiceStatus.RETRYING
    world.clock.now = world.queue.next_visible_at() or world.clock.now


def only_copy(world: World) -> tuple[float, int]:
    """(seconds until the invoice's only message is visible, its receive count)."""
    (message,) = world.queue.messages.values()
    return message.visible_at - world.clock(), message.receive_count


def waits_in_doubt_unsent(world: World) -> None:
    """Nothing was read or sent this time, and the order still waits in doubt (its retry reads)."""
    entry = world.ledger.entries[key("A")]
    assert entry.last_error is not None
    assert (entry.status, entry.last_error.code, entry.last_error.nothing_sent) == (
        InvoiceStatus.RETRYING,
        "out_of_time",
        False,
    )
    assert (world.fynd.reads["A"], world.fynd.sent[key("A")]) == (0, 0)


class LocatedFynd(ScriptedFynd):
    """ScriptedFynd that notes the location each Shipment Info read asks about."""

    def __init__(self, world: World) -> None:
        super().__init__(world.clock, world.faults)
        self.read_locations: list[str | None] = []

    def shipment_info(
        self, order_id: str, location_code: str | None, *, time_budget_seconds: float
    ) -> ShipmentInfo:
        self.read_locations.append(location_code)
        return super().shipment_info(order_id, location_code, time_budget_seconds=time_budget_seconds)


@pytest.mark.parametrize(
    ("reads_apart", "call_slots", "read_slots"),
    [
        (False, ["wh9-credential", "wh9-credential"], []),
        (True, ["wh9-credential"], ["wh9-credential#shipment-info"]),
    ],
    ids=["reads-on-the-calls-pace", "reads-paced-apart"],
)
def test_the_read_and_the_resend_ask_at_the_orders_location_on_its_credentials_pace(
    reads_apart: bool, call_slots: list[str], read_slots: list[str]
) -> None:
    # Given an order in doubt at a location with its own Fynd credential, on a pace of 20 a
    # second (and, for reads paced apart, a read pace of their own)
    calls, reads = InMemoryRateLimiter(20), InMemoryRateLimiter(20)
    world = World(limiter=calls)
    fynd = LocatedFynd(world)
    world.fynd = fynd
    fynd.credentials["WH-9"] = "wh9-credential"
    fynd.novel_status.add("A")  # the read proves nothing: it is sent again
    in_doubt(world, location="WH-9")
    if reads_apart:
        world.read_limiter = reads
    slots_before = len(calls.grants)
    # When it is read and sent again
    world.run(seconds_left=60, timed=True)
    # Then Shipment Info is asked at the order's location, and every slot (the call's, then the
    # second request's own) is on that location's credential, never the company's
    assert fynd.read_locations == ["WH-9"]
    assert [credential for credential, _ in calls.grants[slots_before:]] == call_slots
    assert [credential for credential, _ in reads.grants] == read_slots
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def read_slot_taken_now(world: World) -> InMemoryRateLimiter:
    """Reads paced apart at one a second, and another dispatcher's read has just taken the slot."""
    reads = InMemoryRateLimiter(1)
    world.read_limiter = reads
    reads.acquire("company#shipment-info", now=world.clock(), not_after=world.clock())
    return reads


@pytest.mark.parametrize("waits_for_its_slot", [False, True], ids=["at-once", "after-its-read-slot"])
def test_a_read_with_exactly_the_least_read_time_left_goes(waits_for_its_slot: bool) -> None:
    # Given an order in doubt (Shipment Info will prove nothing), and an invocation that leaves
    # its read exactly MIN_READ_SECONDS after a whole request for the send: 24 s (5 s kept to
    # record, 18 s for the send), or 25 s with the read's slot a second away
    world = World(limiter=InMemoryRateLimiter(20))
    world.fynd.novel_status.add("A")
    in_doubt(world)
    if waits_for_its_slot:
        read_slot_taken_now(world)
    start = world.clock()
    # When it is dispatched
    world.run(seconds_left=25 if waits_for_its_slot else 24, timed=True)
    # Then the read goes with that second, once its slot is free, and the send follows it
    assert world.fynd.read_budgets == [(start + (1 if waits_for_its_slot else 0), MIN_READ_SECONDS)]
    assert world.status(key("A")) is InvoiceStatus.INVOICED


@pytest.mark.parametrize("waits_for_its_slot", [False, True], ids=["at-once", "after-its-read-slot"])
def test_a_read_with_less_than_the_least_read_time_left_defers_the_order_a_second(
    waits_for_its_slot: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an order in doubt, and either an invocation that leaves its read half a second, or
    # a read slot a second away whose wait ends 5 s late (a busy machine): too little either way
    world = World(limiter=InMemoryRateLimiter(20))
    in_doubt(world)
    if waits_for_its_slot:
        read_slot_taken_now(world)

        def late(seconds: float) -> None:
            FakeClock.sleep(world.clock, seconds + 5)

        monkeypatch.setattr(world.clock, "sleep", late)
    # When it is dispatched
    world.run(seconds_left=25 if waits_for_its_slot else 23.5, timed=True)
    # Then it is neither read nor sent: a fresh copy comes back a second later (no receive
    # spent), still in doubt
    waits_in_doubt_unsent(world)
    assert only_copy(world) == (1, 0)


@pytest.mark.parametrize(
    ("seconds_left", "booked_ahead", "back_in"),
    [(60, 200, 200), (37, 14.5, 15)],
    ids=["far-ahead", "just-past-the-reads-spare-time"],
)
def test_a_read_with_no_read_slot_in_time_waits_for_the_slot_in_doubt(
    seconds_left: float, booked_ahead: float, back_in: int
) -> None:
    # Given an order in doubt, and reads paced apart whose pace is booked ahead (a 429 another
    # dispatcher met): 200 s, or 14.5 s when the read's 14 s budget (37 s left, less 5 to
    # record and 18 for the send) would leave it less than MIN_READ_SECONDS after the wait
    world = World(limiter=InMemoryRateLimiter(20))
    in_doubt(world)
    reads = InMemoryRateLimiter(20)
    world.read_limiter = reads
    reads.throttled("company#shipment-info", now=world.clock(), retry_after=booked_ahead)
    # When it is dispatched
    world.run(seconds_left=seconds_left, timed=True)
    # Then it is neither read nor sent, nor does it wait for a slot it could not use: a fresh
    # copy comes back when the read slot is free
    waits_in_doubt_unsent(world)
    assert (world.clock.sleep_calls, reads.grants) == ([], [])
    assert only_copy(world) == (back_in, 0)


def copy_from_another_webhook(world: World) -> None:
    """Dispatch a copy of A that carries webhook-id wh-2 (a sender's retry with a new id), not
    the wh-1 that accepted it."""
    body = QueuedInvoice.from_body(world.ledger.bodies[key("A")])
    world.queue.send([body.model_copy(update={"correlation_id": "wh-2"})])
    (copy,) = [delivery for delivery in world.queue.receive(10) if delivery.message.correlation_id == "wh-2"]
    world.dispatch([copy])


def test_a_read_that_proves_the_order_not_invoiced_logs_that_it_is_sent(
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given an order in doubt that Fynd never applied (Shipment Info: confirmed, not invoiced)
    world = World()
    in_doubt(world)
    # When its retry, carried by a copy from another webhook, reads Shipment Info
    copy_from_another_webhook(world)
    # Then the read's line names the webhook that accepted the invoice (as the status API does),
    # what Shipment Info showed and what that decided: send
    (line,) = [doc for doc in logged() if doc["message"] == "Shipment Info read"]
    assert {name: line[name] for name in ("invoice_key", "correlation_id", "shipment_state", "decided")} == {
        "invoice_key": "A#sale",
        "correlation_id": "wh-1",
        "shipment_state": "ready",
        "decided": "send",
    }
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_a_failed_read_names_the_webhook_that_accepted_the_invoice(
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given an order in doubt, and Shipment Info failing when its retry reads
    world = World()
    in_doubt(world)
    world.faults.fail("fynd.read", FyndUnavailable("Shipment Info answered 502"))
    # When the retry is carried by a copy from another webhook
    copy_from_another_webhook(world)
    # Then the failure's line names the webhook that accepted the invoice, not the copy's
    (line,) = [doc for doc in logged() if doc["message"] == "Shipment Info unavailable"]
    assert (line["invoice_key"], line["correlation_id"]) == ("A#sale", "wh-1")


def test_a_credit_note_is_never_recorded_invoiced_on_its_sales_invoice() -> None:
    # Given an order's sale invoiced, and its credit note's first answer lost before Fynd
    # applied it (so Shipment Info shows the sale's bag_invoiced, which proves nothing of a
    # credit note)
    world = World()
    world.accept(invoice("A"))
    world.run()
    world.accept(invoice("A", invoiceType="return"), correlation_id="wh-2")
    world.faults.fail("fynd.before", lost_answer())
    world.run()
    credit_note = key("A", RETURN)
    assert world.status(credit_note) is InvoiceStatus.RETRYING
    # When it is retried
    world.drain()
    # Then the read did not stop the send: Fynd applied the credit note, and its own answer
    # proved it
    entry = world.ledger.entries[credit_note]
    assert world.fynd.reads["A"] == 1
    assert (entry.status, entry.confirmed_by, world.fynd.applied[credit_note]) == (
        InvoiceStatus.INVOICED,
        "answer",
        1,
    )
