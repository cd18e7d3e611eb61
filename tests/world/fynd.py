"""Fynd as the world sees it: a rate limit per credential, latencies with a tail, IN403 waits,
lost answers, and Lambda's timeout cutting a call after Fynd applied it.

The relay's `Fynd` port (relay.domain.ports.Fynd) is played below the HTTP client: a call
costs its drawn latency on the world's clock, capped by the budget the dispatcher gave it
(the client's total deadline). Rules:
- every Update Invoice call counts against the credential's limit (`rate_per_second`, per
  second of the clock), and every Shipment Info read against the endpoint's own
  (`read_rate_per_second`), or against the calls' when that is None; past it: 429 with
  `Retry-After: 1` (FyndThrottled), after a short round trip. Fynd publishes no limit, nor
  whether it counts per endpoint: parameters;
- an order is applied once; a later send of it answers IN453 and counts as a second send,
  labelled with what happened to the send that applied it: `answer lost` (the 5% whose answer
  never arrives: the client waits its read timeout, then FyndAmbiguous), `killed` (Lambda's
  timeout came before the answer), or `answered` (the outcome was not recorded, e.g. the ledger
  refused the write);
- an order in `early_until` answers IN403 until then (and Shipment Info says `placed`);
- a call longer than its budget is applied, then the client gives up: FyndAmbiguous.
The first request of a dispatcher instance fetches a token first (`FyndSession`).
"""

import random
from collections import Counter
from dataclasses import dataclass, field

from relay.domain.fynd import FyndAmbiguous, FyndCall, FyndReceipt, FyndThrottled, FyndUnavailable, OrderError
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.shipment import ShipmentInfo
from world.clock import Latencies, PerSecond, WorldClock

ANSWER_LOST = "answer lost"
KILLED = "killed after Fynd applied it"
ANSWERED = "answered, outcome not recorded"


class TokenBucket:
    """Rate and burst, refilled continuously: API Gateway's throttle and Fynd's per credential."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = 0.0

    def take(self, now: float) -> bool:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class WorldFynd:
    clock: WorldClock
    latencies: Latencies
    rate_per_second: float = 20.0
    read_rate_per_second: float | None = 20.0
    """Shipment Info's own limit; None: reads count against `rate_per_second` with the calls."""
    lost_share: float = 0.0
    read_timeout_seconds: float = 15.0
    seed: int = 1
    early_until: dict[str, float] = field(default_factory=dict)
    unavailable_until: float = 0.0
    """Before this time every request is answered 503 (nothing applied)."""
    reads_unavailable: bool = False
    """Shipment Info answers 503 (Update Invoice still works)."""
    invoiced: set[InvoiceKey] = field(default_factory=set)
    applied_by: dict[InvoiceKey, str] = field(default_factory=dict)
    sent: Counter[InvoiceKey] = field(default_factory=Counter)
    resent: Counter[str] = field(default_factory=Counter)
    """Second sends of an applied order, by what happened to the send that applied it."""
    resent_keys: dict[InvoiceKey, str] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    """calls, reads, throttled (429), tokens, lost answers, killed calls."""
    orders_per_call: list[int] = field(default_factory=list)
    confirmed_at: dict[InvoiceKey, float] = field(default_factory=dict)
    first_sent_at: dict[InvoiceKey, float] = field(default_factory=dict)
    """When each order first reached Fynd in a call (IN403 or not)."""
    per_second: dict[str, Counter[int]] = field(default_factory=dict)
    """Requests by kind (calls, orders, reads, throttled) per whole second of the clock."""

    def __post_init__(self) -> None:
        # Per second rather than a bucket: invocations charge it out of order (world.clock.PerSecond).
        self.bucket = PerSecond(self.rate_per_second)
        self.read_bucket = (
            self.bucket if self.read_rate_per_second is None else PerSecond(self.read_rate_per_second)
        )
        self._rng = random.Random(f"{self.seed}:fynd")

    def session(self) -> "FyndSession":
        return FyndSession(self)

    # ---- the requests ----
    def _admit(self, budget: float, bucket: PerSecond) -> None:
        """The request's round trip to a refusal, if any: 503 before `unavailable_until`, 429 when
        the endpoint's bucket is empty."""
        if self.clock.now < self.unavailable_until:
            self.clock.spend(self.latencies.draw("fynd.throttled"))
            raise FyndUnavailable("Fynd answered 503 (world)", status=503)
        if not bucket.take(self.clock.now):
            self.requests["throttled"] += 1
            self._tally("throttled")
            self.clock.spend(min(budget, self.latencies.draw("fynd.throttled")))
            raise FyndThrottled("Fynd answered 429 (world)", retry_after=1, status=429)

    def update_invoices(self, call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        self._admit(time_budget_seconds, self.bucket)
        self.requests["calls"] += 1
        self.orders_per_call.append(len(call.invoices))
        self._tally("calls")
        self._tally("orders", len(call.invoices))
        latency = self.latencies.draw("fynd.call")
        lost = self.lost_share > 0 and self._rng.random() < self.lost_share
        waited = min(time_budget_seconds, self.read_timeout_seconds) if lost else latency
        timed_out = waited > time_budget_seconds
        waited = min(waited, time_budget_seconds)
        killed = self.clock.would_pass_deadline(waited)
        outcome = KILLED if killed else ANSWER_LOST if lost or timed_out else ANSWERED
        errors = self._apply(call, outcome)
        if killed:
            self.requests["killed"] += 1
        if lost or timed_out:
            self.requests["lost"] += 1
        self.clock.spend(waited)  # raises Killed at the deadline: Fynd applied the call anyway
        if lost or timed_out:
            raise FyndAmbiguous("no answer from Fynd after sending (world)")
        return FyndReceipt(
            call,
            errors,
            ack_id=f"ack-{self.requests['calls']}",
            status="PARTIAL" if errors else "SUCCESS",
        )

    def _tally(self, kind: str, amount: int = 1) -> None:
        self.per_second.setdefault(kind, Counter())[int(self.clock.now)] += amount

    def _apply(self, call: FyndCall, outcome: str) -> dict[str, OrderError]:
        now = self.clock.now
        errors: dict[str, OrderError] = {}
        for invoice in call.invoices:
            key = invoice.key
            self.sent[key] += 1
            self.first_sent_at.setdefault(key, now)
            if key in self.invoiced:
                errors[invoice.orderId] = OrderError(invoice.orderId, "IN453", "already invoiced (world)")
                if key not in self.resent_keys:
                    self.resent_keys[key] = self.applied_by[key]
                    self.resent[self.applied_by[key]] += 1
            elif self.early_until.get(invoice.orderId, 0) > now:
                errors[invoice.orderId] = OrderError(invoice.orderId, "IN403", "order not confirmed (world)")
            else:
                self.invoiced.add(key)
                self.applied_by[key] = outcome
        return errors

    def shipment_info(
        self, order_id: str, location_code: str | None, *, time_budget_seconds: float
    ) -> ShipmentInfo:
        self._admit(time_budget_seconds, self.read_bucket)
        self.requests["reads"] += 1
        self._tally("reads")
        if self.reads_unavailable:
            self.clock.spend(self.latencies.draw("fynd.throttled"))
            raise FyndUnavailable("Shipment Info answered 503 (world)", status=503)
        latency = self.latencies.draw("fynd.read")
        if latency > time_budget_seconds:
            self.clock.spend(time_budget_seconds)
            raise FyndUnavailable("Shipment Info timed out (world)")
        self.clock.spend(latency)
        if InvoiceKey(order_id, InvoiceType.SALE) in self.invoiced:
            return ShipmentInfo(order_id, True, order_status="PROCESSING", bag_status="bag_invoiced")
        if self.early_until.get(order_id, 0) > self.clock.now:
            return ShipmentInfo(order_id, True, order_status="CREATED", bag_status="placed")
        return ShipmentInfo(order_id, True, order_status="CONFIRMED", bag_status="bag_confirmed")


class FyndSession:
    """One dispatcher instance's Fynd client: the token is fetched on its first request."""

    def __init__(self, fynd: WorldFynd) -> None:
        self._fynd = fynd
        self._token = False

    def credential_for(self, location_code: str | None) -> str:
        """The company-level credential: the world's Fynd counts one limit for all locations."""
        return "company"

    def _ensure_token(self) -> None:
        if not self._token:
            self._fynd.requests["tokens"] += 1
            self._fynd.clock.spend(self._fynd.latencies.draw("fynd.token"))
            self._token = True

    def update_invoices(self, call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        self._ensure_token()
        return self._fynd.update_invoices(call, time_budget_seconds=time_budget_seconds)

    def shipment_info(
        self, order_id: str, location_code: str | None, *, time_budget_seconds: float
    ) -> ShipmentInfo:
        self._ensure_token()
        return self._fynd.shipment_info(order_id, location_code, time_budget_seconds=time_budget_seconds)
