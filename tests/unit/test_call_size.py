"""Breach 6 (client and planning part): a call is capped by its JSON body as well as by 20
orders, and a whole-call 4xx other than 401/403/429 is FyndCallRefused, which names the
status and a short reason so the dispatcher can split the call and reject an invoice
refused on its own."""

import json
from typing import Any

import pytest
import urllib3

from factories import invoice
from relay.adapters.fynd import Credentials, FyndClient
from relay.domain.fynd import (
    MAX_CALL_BYTES,
    FyndCall,
    FyndCallError,
    FyndCallRefused,
    encode_invoices,
    plan_calls,
)
from relay.domain.invoice import Invoice, InvoiceType


def padded(order_id: str, size: int) -> Invoice:
    """An invoice whose signedInvoice makes its encoded object about `size` bytes."""
    return invoice(order_id, signedInvoice="x" * size)


def test_calls_are_capped_by_body_bytes() -> None:
    # Given 20 invoices of about 30 KiB each: 600 KiB if sent as one call
    invoices = [padded(f"O-{n}", 30 * 1024) for n in range(20)]
    # When they are planned with the default cap
    calls = plan_calls(invoices)
    # Then every call's body, byte for byte as sent, is within the cap
    assert len(calls) > 1
    assert all(len(encode_invoices(call.invoices)) <= MAX_CALL_BYTES for call in calls)
    # And nothing is lost or reordered
    assert [i.orderId for call in calls for i in call.invoices] == [f"O-{n}" for n in range(20)]


def test_breach_6_each_call_is_filled_up_to_the_cap_exactly() -> None:
    # Given invoices whose bodies fill a cap exactly, two per call
    one = len(encode_invoices([padded("O-0", 100)]))
    cap = len(encode_invoices([padded("O-0", 100), padded("O-1", 100)]))
    invoices = [padded(f"O-{n}", 100) for n in range(5)]
    # When planned with that cap
    calls = plan_calls(invoices, max_bytes=cap)
    # Then calls hold two, two and one, and the two-invoice bodies are exactly the cap
    assert [len(call.invoices) for call in calls] == [2, 2, 1]
    assert [len(encode_invoices(call.invoices)) for call in calls] == [cap, cap, one]
    # And one byte less splits every pair
    assert [len(c.invoices) for c in plan_calls(invoices, max_bytes=cap - 1)] == [1] * 5


def test_breach_6_an_invoice_above_the_cap_alone_still_gets_its_own_call() -> None:
    invoices = [padded("SMALL-1", 10), padded("HUGE", 2000), padded("SMALL-2", 10)]
    calls = plan_calls(invoices, max_bytes=1000)
    assert [[i.orderId for i in call.invoices] for call in calls] == [["SMALL-1"], ["HUGE"], ["SMALL-2"]]


def test_the_order_cap_still_holds_for_small_invoices() -> None:
    calls = plan_calls([invoice(f"O-{n}") for n in range(45)])
    assert [len(call.invoices) for call in calls] == [20, 20, 5]


class ScriptedPool:
    def __init__(self, *replies: urllib3.HTTPResponse) -> None:
        self.replies = list(replies)
        self.bodies: list[bytes] = []

    def request(self, method: str, url: str, body: bytes | None = None, **_: Any) -> urllib3.HTTPResponse:
        if body is not None:
            self.bodies.append(body)
        return self.replies.pop(0)


class OneCredential:
    def for_location(self, location_code: str | None) -> Credentials:
        return Credentials("user", "password")


def reply(status: int, body: Any) -> urllib3.HTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return urllib3.HTTPResponse(body=data, status=status, preload_content=True)


TOKEN = reply(200, {"access_token": "t", "expires_in": 3600})
CALL = FyndCall(None, InvoiceType.SALE, (invoice("A"), invoice("B")))


def send(answer: urllib3.HTTPResponse) -> ScriptedPool:
    pool = ScriptedPool(TOKEN, answer)
    FyndClient("https://fynd.test", OneCredential(), http=pool).update_invoices(CALL, time_budget_seconds=30)  # type: ignore[arg-type]
    return pool


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (413, {"title": "Content Too Large", "detail": "body over 262144 bytes"}, "body over 262144 bytes"),
        (400, {"message": "invalid\njson\tat [3]"}, "invalid json at [3]"),
        (422, b"<html>unprocessable</html>", "Unprocessable Content"),
        (400, {"message": "x" * 500}, "x" * 200),
    ],
)
def test_breach_6_a_whole_call_4xx_is_refused_with_its_status_and_a_short_reason(
    status: int, body: Any, detail: str
) -> None:
    # Given Fynd refuses the whole call with a 4xx that is not about the token or the rate
    # When the call is made
    with pytest.raises(FyndCallRefused) as refused:
        send(reply(status, body))
    # Then the error carries the status, a short printable reason, and the dispatcher's reason
    assert refused.value.status == status
    assert refused.value.detail == detail
    assert refused.value.reason == "fynd_refused"
    assert refused.value.code == f"HTTP{status}"


@pytest.mark.parametrize("status", [404, 405, 410, 415])
def test_a_4xx_about_our_endpoint_is_not_a_refusal_of_the_invoices(status: int) -> None:
    # Splitting would reject every good invoice when the URL or media type is wrong
    with pytest.raises(FyndCallError) as failed:
        send(reply(status, {}))
    assert not isinstance(failed.value, FyndCallRefused)


def test_the_body_sent_is_the_body_planned() -> None:
    ok = {"payloadCount": 2, "successCount": 2, "failedCount": 0, "status": "SUCCESS", "errors": []}
    pool = send(reply(200, ok))
    assert pool.bodies == [encode_invoices(CALL.invoices)]
