"""Issue 7: Get Shipment Info, read defensively, and what an answer proves.

Only positive proof may stop a send: an unknown value, a missing field or two fields that
disagree prove nothing (UNKNOWN)."""

import json
from typing import Any

import pytest
import urllib3

from relay.adapters.fynd import SHIPMENT_INFO_PATH, Credentials, FyndClient
from relay.domain.fynd import FyndAuthError, FyndCallError, FyndNotSent, FyndThrottled, FyndUnavailable
from relay.domain.invoice import InvoiceType
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
