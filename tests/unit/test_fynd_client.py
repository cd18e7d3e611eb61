"""The Fynd client against a fake connection pool: tolerant reading of Fynd's answers, token
caching and refresh, and the typed error for every way a call can fail."""

import json
from collections.abc import Callable
from typing import Any

import pytest
import urllib3

from factories import invoice
from relay.adapters.fynd import INVOICE_PATH, TOKEN_PATH, Credentials, FyndClient
from relay.domain.fynd import (
    FyndAmbiguous,
    FyndAuthError,
    FyndCall,
    FyndCallError,
    FyndCallRefused,
    FyndNotSent,
    FyndThrottled,
    FyndUnavailable,
)
from relay.domain.invoice import InvoiceType

BUDGET = 30.0

Reply = urllib3.HTTPResponse | Exception


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> urllib3.HTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return urllib3.HTTPResponse(body=data, status=status, headers=headers or {}, preload_content=True)


def token(value: str = "tok-1", expires_in: int = 3600) -> urllib3.HTTPResponse:
    return reply(200, {"access_token": value, "expires_in": expires_in})


class FakePool:
    """Answers scripted replies in order and records what was asked."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **options: Any) -> urllib3.HTTPResponse:
        self.requests.append({"method": method, "url": url, **options})
        answer = self.replies.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class StaticCredentials:
    def __init__(self, locations: dict[str, Credentials] | None = None) -> None:
        self.locations = locations or {}

    def for_location(self, location_code: str | None) -> Credentials:
        return self.locations.get(location_code or "", Credentials("company", "company-secret"))


def client(pool: FakePool, clock: Callable[[], float] = lambda: 1000.0, **kwargs: Any) -> FyndClient:
    return FyndClient("https://fynd.test/", StaticCredentials(**kwargs), http=pool, clock=clock)  # type: ignore[arg-type]


def call(*order_ids: str, location: str | None = None) -> FyndCall:
    return FyndCall(location, InvoiceType.SALE, tuple(invoice(order_id) for order_id in order_ids))


def test_success_sends_the_fynd_body_with_the_token() -> None:
    pool = FakePool(
        token(),
        reply(
            200, {"payloadCount": 2, "successCount": 2, "failedCount": 0, "status": "SUCCESS", "errors": []}
        ),
    )
    receipt = client(pool).update_invoices(call("A", "B"), time_budget_seconds=BUDGET)
    assert receipt.errors == {}
    token_request, invoice_request = pool.requests
    assert token_request["url"].startswith(f"https://fynd.test{TOKEN_PATH}?username=company&password=")
    assert invoice_request["url"] == f"https://fynd.test{INVOICE_PATH}"
    assert invoice_request["headers"]["x-access-token"] == "tok-1"
    assert json.loads(invoice_request["body"]) == [
        {"orderId": "A", "invoiceNumber": "INV-A", "invoiceType": "sale"},
        {"orderId": "B", "invoiceNumber": "INV-B", "invoiceType": "sale"},
    ]
    assert invoice_request["retries"] is False  # never let urllib3 resend a POST by itself


def test_partial_failure_names_each_failed_order() -> None:
    answer = {
        "status": "PARTIAL",
        "payloadCount": 2,
        "successCount": 1,
        "failedCount": 1,
        "errors": [{"orderId": "B", "code": "IN401", "message": "cancelled"}],
    }
    receipt = client(FakePool(token(), reply(200, answer))).update_invoices(
        call("A", "B"), time_budget_seconds=BUDGET
    )
    assert receipt.error_for("A") is None
    assert (receipt.error_for("B").code, receipt.error_for("B").message) == ("IN401", "cancelled")  # type: ignore[union-attr]


def test_snake_case_envelope_and_alternate_error_keys_are_read() -> None:
    answer = {
        "data": {
            "payload_count": 2,
            "success_count": 1,
            "failed_count": 1,
            "errors": [{"order_id": "A", "error_code": "IN453"}],
        },
        "meta": {"ack_id": "ack-77", "status": "PARTIAL"},
    }
    receipt = client(FakePool(token(), reply(200, answer))).update_invoices(
        call("A", "B"), time_budget_seconds=BUDGET
    )
    assert receipt.error_for("A").code == "IN453"  # type: ignore[union-attr]
    assert receipt.ack_id == "ack-77"


def test_errorcode_spelling_is_read_too() -> None:
    answer = {"status": "FAILED", "errors": [{"orderId": "A", "errorCode": "IN422", "message": "bad"}]}
    receipt = client(FakePool(token(), reply(200, answer))).update_invoices(
        call("A"), time_budget_seconds=BUDGET
    )
    assert receipt.error_for("A").code == "IN422"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "answer",
    [
        {"status": "PARTIAL", "errors": [{"orderId": "Z", "code": "IN401"}]},  # not an order of the call
        {"status": "PARTIAL", "errors": [{"code": "IN401"}]},  # names no order
        {"status": "PARTIAL", "errors": [{"orderId": "A"}]},  # no code
        {"status": "FAILED", "errors": []},  # failed, but which?
        {"status": "SUCCESS", "failedCount": 2, "errors": [{"orderId": "A", "code": "IN401"}]},
        {"status": "SUCCESS", "errors": "oops"},
        b"<html>gateway</html>",
        [1, 2],
    ],
)
def test_an_answer_we_cannot_match_to_our_orders_is_ambiguous(answer: Any) -> None:
    with pytest.raises(FyndAmbiguous):
        client(FakePool(token(), reply(200, answer))).update_invoices(
            call("A", "B"), time_budget_seconds=BUDGET
        )


def test_token_is_cached_until_shortly_before_expiry() -> None:
    now = [1000.0]
    ok = {"status": "SUCCESS", "errors": []}
    pool = FakePool(token("t1", 3600), reply(200, ok), reply(200, ok), token("t2", 3600), reply(200, ok))
    fynd = client(pool, clock=lambda: now[0])
    fynd.update_invoices(call("A"), time_budget_seconds=BUDGET)
    now[0] += 3000  # still well inside the hour
    fynd.update_invoices(call("B"), time_budget_seconds=BUDGET)
    now[0] += 400  # within five minutes of expiry
    fynd.update_invoices(call("C"), time_budget_seconds=BUDGET)
    tokens = [r["headers"]["x-access-token"] for r in pool.requests if r["method"] == "POST"]
    assert tokens == ["t1", "t1", "t2"]


def test_token_in_data_or_under_token_key_is_read() -> None:
    ok = {"status": "SUCCESS", "errors": []}
    pool = FakePool(reply(200, {"data": {"token": "nested"}}), reply(200, ok))
    client(pool).update_invoices(call("A"), time_budget_seconds=BUDGET)
    assert pool.requests[1]["headers"]["x-access-token"] == "nested"


def test_401_fetches_a_new_token_once_and_retries() -> None:
    ok = {"status": "SUCCESS", "errors": []}
    pool = FakePool(token("old"), reply(401, {}), token("new"), reply(200, ok))
    client(pool).update_invoices(call("A"), time_budget_seconds=BUDGET)
    assert [r["headers"]["x-access-token"] for r in pool.requests if r["method"] == "POST"] == ["old", "new"]


def test_401_again_after_a_fresh_token_is_an_auth_error() -> None:
    pool = FakePool(token("old"), reply(401, {}), token("new"), reply(401, {}))
    with pytest.raises(FyndAuthError):
        client(pool).update_invoices(call("A"), time_budget_seconds=BUDGET)
    assert len(pool.requests) == 4  # exactly one refresh, no loop


def test_refused_credentials_are_an_auth_error_that_hides_the_password() -> None:
    with pytest.raises(FyndAuthError) as refused:
        client(FakePool(reply(401, {"message": "bad credentials"}))).update_invoices(
            call("A"), time_budget_seconds=BUDGET
        )
    assert "company-secret" not in str(refused.value)


def test_location_credentials_are_used_and_location_is_sent_in_the_query() -> None:
    ok = {"status": "SUCCESS", "errors": []}
    pool = FakePool(token("wh1"), reply(200, ok))
    fynd = client(pool, locations={"WH-1": Credentials("wh1-user", "wh1-pass", "WH-1")})
    fynd.update_invoices(call("A", location="WH-1"), time_budget_seconds=BUDGET)
    assert "username=wh1-user" in pool.requests[0]["url"]
    assert pool.requests[1]["url"].endswith("?locationCode=WH-1")


@pytest.mark.parametrize(
    ("answer", "error", "retry_after"),
    [
        (reply(429, {}, {"Retry-After": "7"}), FyndThrottled, 7.0),
        (reply(429, {}, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}), FyndThrottled, None),
        (reply(503, {}), FyndUnavailable, None),
        (reply(400, {"message": "bad"}), FyndCallRefused, None),
        (reply(404, {"message": "no route"}), FyndCallError, None),
        (reply(408, {}), FyndUnavailable, None),
        (urllib3.exceptions.NewConnectionError(None, "refused"), FyndNotSent, None),  # type: ignore[arg-type]
        (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), FyndAmbiguous, None),  # type: ignore[arg-type]
        (urllib3.exceptions.ProtocolError("connection dropped"), FyndAmbiguous, None),
    ],
)
def test_whole_call_failures_are_typed(
    answer: Reply, error: type[FyndCallError], retry_after: float | None
) -> None:
    with pytest.raises(error) as failed:
        client(FakePool(token(), answer)).update_invoices(call("A"), time_budget_seconds=BUDGET)
    assert failed.type is error
    assert failed.value.retry_after == retry_after
    # Only failures that prove Fynd applied nothing spare the next attempt its Shipment Info read
    assert failed.value.nothing_sent is (error in (FyndThrottled, FyndCallRefused, FyndNotSent))


def test_unreachable_token_endpoint_is_unavailable_and_hides_the_url() -> None:
    pool = FakePool(urllib3.exceptions.NewConnectionError(None, "https://fynd.test/?password=company-secret"))  # type: ignore[arg-type]
    with pytest.raises(FyndUnavailable) as failed:
        client(pool).update_invoices(call("A"), time_budget_seconds=BUDGET)
    assert "company-secret" not in str(failed.value)


def test_credentials_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(Credentials("user", "s3cret"))
