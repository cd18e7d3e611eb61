"""Breach 5: a 2xx from Fynd that confirms nothing must never mark an order invoiced.

The confirmation rule (docs/fynd-update-invoice.md, "partial failure"): an order Fynd does
not name is invoiced only when the answer positively confirms it. Fynd's named per-order
errors stay usable when the rest is in doubt (FyndAmbiguous.answered), unless some entry
cannot be matched to this call, in which case nothing in the answer is used.
"""

import json
from typing import Any

import pytest
import urllib3

from factories import invoice
from fakes import InMemoryRateLimiter, World, lost_answer
from relay.adapters.fynd import Credentials, FyndClient
from relay.domain.fynd import FyndAmbiguous, FyndCall, FyndReceipt
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus

BUDGET = 30.0


class OneCredential:
    def for_location(self, location_code: str | None) -> Credentials:
        return Credentials("user", "password")


class ScriptedPool:
    def __init__(self, *replies: urllib3.HTTPResponse) -> None:
        self.replies = list(replies)

    def request(self, method: str, url: str, **_: Any) -> urllib3.HTTPResponse:
        return self.replies.pop(0)


def reply(body: Any, status: int = 200) -> urllib3.HTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return urllib3.HTTPResponse(body=data, status=status, preload_content=True)


def answer(body: Any, *order_ids: str, status: int = 200) -> FyndReceipt:
    token = reply({"access_token": "t", "expires_in": 3600})
    client = FyndClient("https://fynd.test", OneCredential(), http=ScriptedPool(token, reply(body, status)))  # type: ignore[arg-type]
    call = FyndCall(None, InvoiceType.SALE, tuple(invoice(order_id) for order_id in order_ids))
    return client.update_invoices(call, time_budget_seconds=BUDGET)


def b_refused(code: str = "IN401") -> dict[str, str]:
    return {"orderId": "B", "code": code, "message": "cancelled"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="empty-object"),
        pytest.param({"success": False}, id="success-false"),
        pytest.param({"error": "Something went wrong"}, id="error-message"),
        pytest.param({"message": "Request received"}, id="a-message"),
        pytest.param({"data": None}, id="data-null"),
        pytest.param({"data": {}, "meta": {"status": "SUCCESS"}}, id="snake-without-counts-or-errors"),
        pytest.param(
            {"payloadCount": 2, "successCount": 2, "failedCount": "0", "status": "SUCCESS", "errors": []},
            id="string-failedCount",
        ),
        pytest.param(
            {"payloadCount": 2, "successCount": True, "failedCount": 0, "status": "SUCCESS", "errors": []},
            id="boolean-count",
        ),
        pytest.param({"successCount": 2, "status": "SUCCESS", "errors": []}, id="some-counts-missing"),
        pytest.param(
            {"payloadCount": 3, "successCount": 3, "failedCount": 0, "status": "SUCCESS", "errors": []},
            id="payloadCount-not-orders-sent",
        ),
        pytest.param(
            {"payloadCount": 2, "successCount": 2, "failedCount": 1, "status": "SUCCESS", "errors": []},
            id="counts-do-not-add-up",
        ),
        pytest.param(
            {
                "payloadCount": 2,
                "successCount": 0,
                "failedCount": 2,
                "status": "FAILED",
                "errors": [b_refused()],
            },
            id="failedCount-above-errors-named",
        ),
        pytest.param(
            {
                "payloadCount": 2,
                "successCount": 1,
                "failedCount": 1,
                "status": "FAILED",
                "errors": [b_refused()],
            },
            id="counts-add-up-but-FAILED",
        ),
        pytest.param(
            {"payloadCount": 2, "successCount": 2, "failedCount": 0, "status": "QUEUED", "errors": []},
            id="unknown-status",
        ),
        pytest.param({"status": "FAILED", "errors": [b_refused()]}, id="FAILED-naming-only-some"),
        pytest.param({"status": "PARTIAL", "errors": [b_refused()]}, id="PARTIAL-without-counts"),
        pytest.param({"status": "SUCCESS"}, id="SUCCESS-without-errors-list"),
        pytest.param({"status": "success", "errors": []}, id="SUCCESS-not-exact"),
        pytest.param({"status": "SUCCESS", "errors": [], "success": False}, id="SUCCESS-contradicted"),
    ],
)
def test_a_2xx_that_does_not_confirm_order_a_leaves_it_ambiguous(body: Any) -> None:
    # Given a call for A and B, and a 200 whose body does not positively confirm A
    # When the client reads the answer
    with pytest.raises(FyndAmbiguous) as doubt:
        answer(body, "A", "B")
    # Then A is in doubt: the caller must retry it, never record it invoiced
    assert doubt.value.error_for("A") is None


@pytest.mark.parametrize("status", [202, 204, 301])
def test_breach_5_a_2xx_or_3xx_other_than_200_or_201_confirms_nothing(status: int) -> None:
    # Given a well-formed success body, but a 202 (queued, not done), 204 or a redirect
    ok = {"payloadCount": 1, "successCount": 1, "failedCount": 0, "status": "SUCCESS", "errors": []}
    # When it is read / Then nothing is confirmed
    with pytest.raises(FyndAmbiguous) as doubt:
        answer(ok, "A", status=status)
    assert doubt.value.answered == {}


def test_breach_5_named_errors_stay_usable_when_the_rest_is_unconfirmed() -> None:
    # Given FAILED naming B only, without counts
    body = {"status": "FAILED", "errors": [b_refused("IN453")]}
    # When it is read
    with pytest.raises(FyndAmbiguous) as doubt:
        answer(body, "A", "B", "C")
    # Then B carries Fynd's own word, and A and C are in doubt
    assert {order: error.code for order, error in doubt.value.answered.items()} == {"B": "IN453"}
    assert doubt.value.error_for("B") == doubt.value.answered["B"]
    assert doubt.value.error_for("A") is None
    assert doubt.value.error_for("C") is None
    # And the doubt keeps the HTTP status Fynd answered with, for the log
    assert doubt.value.status == 200


@pytest.mark.parametrize(
    "errors",
    [
        [b_refused(), {"orderId": "Z", "code": "IN401"}],  # Z is not an order of this call
        [b_refused(), {"code": "IN401"}],  # names no order
        [b_refused("IN401"), b_refused("IN453")],  # one order, two codes
    ],
)
def test_breach_5_an_unmatchable_error_makes_nothing_in_the_answer_usable(errors: list[Any]) -> None:
    # Given an answer with an error entry that cannot be matched to this call
    # When it is read
    with pytest.raises(FyndAmbiguous) as doubt:
        answer({"status": "PARTIAL", "errors": errors}, "A", "B")
    # Then even the entry that did match is not used: the answer may not be about this call
    assert doubt.value.answered == {}


@pytest.mark.parametrize(
    "body",
    [
        {
            "payloadCount": 2,
            "successCount": 1,
            "failedCount": 1,
            "status": "PARTIAL",
            "errors": [b_refused()],
        },
        {"payloadCount": 2, "successCount": 1, "failedCount": 1, "errors": [b_refused()]},
        {
            "data": {"payload_count": 2, "success_count": 1, "failed_count": 1, "errors": [b_refused()]},
            "meta": {"status": "PARTIAL", "ack_id": "ack-1"},
        },
    ],
)
def test_counts_that_add_up_confirm_the_unnamed_orders(body: Any) -> None:
    # Given counts that account for every order sent, B named
    receipt = answer(body, "A", "B")
    # Then A is confirmed invoiced and B carries its error
    assert receipt.error_for("A") is None
    assert receipt.error_for("B").code == "IN401"  # type: ignore[union-attr]


def test_an_exact_success_with_an_empty_error_list_confirms_without_counts() -> None:
    receipt = answer({"status": "SUCCESS", "errors": []}, "A", "B")
    assert receipt.errors == {}


def test_an_answer_naming_every_order_needs_no_counts() -> None:
    # Given FAILED naming both orders of the call: nothing is left unconfirmed
    receipt = answer(
        {"status": "FAILED", "errors": [b_refused(), {"orderId": "A", "code": "IN422"}]}, "A", "B"
    )
    assert {order: error.code for order, error in receipt.errors.items()} == {"A": "IN422", "B": "IN401"}


# ---- a lost answer, read at once (relay.domain.dispatch, step 4) ----


def test_orders_read_at_once_after_a_lost_answer_are_counted_one_each(
    counted: list[tuple[str, float, dict[str, str]]],
) -> None:
    # Given reads paced apart, and a call of three orders that Fynd applies but whose answer is lost
    world = World(limiter=InMemoryRateLimiter(20), read_limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A"), invoice("B"), invoice("C"))
    world.faults.fail("fynd.after", lost_answer())
    # When it is dispatched once
    world.run(seconds_left=60, timed=True)
    # Then one ReadAfterLostAnswer datapoint counts the three orders read at once (the metric
    # that shows how often answers are lost, in orders), and each is recorded on its read
    assert [(value, dimensions) for name, value, dimensions in counted if name == "ReadAfterLostAnswer"] == [
        (3, {})
    ]
    assert all(world.status(InvoiceKey(order, InvoiceType.SALE)) is InvoiceStatus.INVOICED for order in "ABC")
