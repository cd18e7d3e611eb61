"""Breach 7: one total deadline per Fynd call, token fetch and one refresh included.

The fake pool plays urllib3 honestly on a fake monotonic clock: each scripted reply takes
some seconds; when that is more than the request's `Timeout.total`, the clock moves by the
total and the pool raises the timeout urllib3 would. Nothing sleeps.
"""

import json
from dataclasses import dataclass
from typing import Any

import pytest
import urllib3

from factories import invoice
from relay.adapters.fynd import MIN_REQUEST_SECONDS, Credentials, FyndClient
from relay.domain.fynd import FyndAmbiguous, FyndCall, FyndNotSent, FyndUnavailable
from relay.domain.invoice import InvoiceType

OK = {"payloadCount": 1, "successCount": 1, "failedCount": 0, "status": "SUCCESS", "errors": []}


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Slow:
    """A reply that takes `seconds` to arrive."""

    seconds: float
    status: int = 200
    body: Any = None


class TimedPool:
    def __init__(self, clock: FakeMonotonic, *replies: Slow) -> None:
        self.clock = clock
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, *, timeout: urllib3.Timeout, **_: Any) -> urllib3.HTTPResponse:
        self.requests.append(
            {"method": method, "url": url, "total": timeout.total, "connect": timeout.connect_timeout}
        )
        slow = self.replies.pop(0)
        assert timeout.total is not None, "every request carries a total timeout"
        if slow.seconds > timeout.total:
            self.clock.now += timeout.total
            raise urllib3.exceptions.ReadTimeoutError(None, url, "read timed out")  # type: ignore[arg-type]
        self.clock.now += slow.seconds
        return urllib3.HTTPResponse(
            body=json.dumps(slow.body).encode(), status=slow.status, preload_content=True
        )


def token(seconds: float, value: str = "tok") -> Slow:
    return Slow(seconds, 200, {"access_token": value, "expires_in": 3600})


class OneCredential:
    def for_location(self, location_code: str | None) -> Credentials:
        return Credentials("user", "password")


def client(pool: TimedPool, clock: FakeMonotonic, timeout: urllib3.Timeout | None = None) -> FyndClient:
    return FyndClient(
        "https://fynd.test",
        OneCredential(),
        http=pool,  # type: ignore[arg-type]
        timeout=timeout or urllib3.Timeout(connect=3, read=60),
        clock=lambda: 1000.0,
        monotonic=clock,
    )


CALL = FyndCall(None, InvoiceType.SALE, (invoice("A"),))


def test_each_request_gets_what_is_left_of_one_deadline() -> None:
    # Given a 20 s budget, and Fynd that takes 2 s for a token, 3 s to refuse it (401),
    # 1 s for a fresh token and 4 s to answer
    clock = FakeMonotonic()
    pool = TimedPool(clock, token(2), Slow(3, 401, {}), token(1, "fresh"), Slow(4, 200, OK))
    # When one call is made
    client(pool, clock).update_invoices(CALL, time_budget_seconds=20)
    # Then each request's total is taken from what is left (a token fetch from half of it)
    totals = [request["total"] for request in pool.requests]
    assert totals == [10.0, 18.0, 7.5, 14.0]
    # And no request could have run past the deadline
    assert all(r["connect"] <= r["total"] for r in pool.requests)
    assert clock.now - 500.0 <= 20


def test_breach_7_a_slow_token_endpoint_leaves_nothing_sent_and_unavailable() -> None:
    # Given a 4 s budget and a token endpoint that answers after 1.8 s
    clock = FakeMonotonic()
    pool = TimedPool(clock, token(1.8), Slow(1, 200, OK))
    # When the call is made, 2.2 s are left: the POST fits
    client(pool, clock).update_invoices(CALL, time_budget_seconds=4)
    assert [r["method"] for r in pool.requests] == ["GET", "POST"]
    # Given a fresh client whose token fetch times out at half the budget
    clock = FakeMonotonic()
    pool = TimedPool(clock, token(30))
    # Then it is FyndNotSent (nothing was sent) and no POST was made
    with pytest.raises(FyndNotSent):
        client(pool, clock).update_invoices(CALL, time_budget_seconds=4)
    assert [r["method"] for r in pool.requests] == ["GET"]


def test_breach_7_a_budget_spent_before_the_post_is_unavailable_and_sends_nothing() -> None:
    # Given a client holding a cached token
    clock = FakeMonotonic()
    pool = TimedPool(clock, token(1), Slow(1, 200, OK))
    fynd = client(pool, clock)
    fynd.update_invoices(CALL, time_budget_seconds=10)
    # When the next call comes with less time than a POST needs to start
    with pytest.raises(FyndNotSent):
        fynd.update_invoices(CALL, time_budget_seconds=MIN_REQUEST_SECONDS * 0.9)
    # Then it is FyndNotSent and no second POST was made
    assert [r["method"] for r in pool.requests] == ["GET", "POST"]


def test_breach_7_no_time_for_even_a_token_sends_nothing() -> None:
    clock = FakeMonotonic()
    pool = TimedPool(clock)
    with pytest.raises(FyndNotSent):
        client(pool, clock).update_invoices(CALL, time_budget_seconds=MIN_REQUEST_SECONDS)
    assert pool.requests == []


def test_breach_7_a_post_that_outlives_the_deadline_is_ambiguous() -> None:
    # Given a 10 s budget, a token in 1 s, and Fynd that takes 60 s to answer the POST
    clock = FakeMonotonic()
    pool = TimedPool(clock, token(1), Slow(60, 200, OK))
    # When the call is made
    with pytest.raises(FyndAmbiguous):
        client(pool, clock).update_invoices(CALL, time_budget_seconds=10)
    # Then the POST was cut at the deadline, not at the 63 s the configured timeouts allow
    assert pool.requests[1]["total"] == 9.0
    assert clock.now - 500.0 == 10.0


def test_breach_7_out_of_time_after_a_401_is_unavailable_with_one_post() -> None:
    # Given a 401 that arrives when too little time is left for a new token and a second POST
    clock = FakeMonotonic()
    pool = TimedPool(clock, token(1), Slow(8.5, 401, {}))
    # When the call is made
    with pytest.raises(FyndUnavailable):
        client(pool, clock).update_invoices(CALL, time_budget_seconds=10)
    # Then the 401 proved nothing was applied: one POST, no retry
    assert [r["method"] for r in pool.requests] == ["GET", "POST"]


def test_breach_7_the_configured_timeouts_still_cap_one_request() -> None:
    clock = FakeMonotonic()
    pool = TimedPool(clock, token(1), Slow(1, 200, OK))
    client(pool, clock, urllib3.Timeout(connect=1, read=4)).update_invoices(CALL, time_budget_seconds=100)
    assert [(r["total"], r["connect"]) for r in pool.requests] == [(5.0, 1.0), (5.0, 1.0)]


def test_breach_7_shipment_info_keeps_the_same_deadline() -> None:
    clock = FakeMonotonic()
    pool = TimedPool(clock, token(2), Slow(30, 200, {"orders": []}))
    with pytest.raises(FyndUnavailable):  # a read that times out changed nothing
        client(pool, clock).shipment_info("A", None, time_budget_seconds=6)
    assert [r["total"] for r in pool.requests] == [3.0, 4.0]
