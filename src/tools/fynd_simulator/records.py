"""What the simulator remembers, as immutable snapshots and as the admin API's JSON.

The `*Json` TypedDicts are the wire shapes of `GET /_sim/calls`, `/_sim/orders` and
`/_sim/stats`; `SimulatorControl` returns them, so in-process and out-of-process tests
read the same field names.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from fynd_simulator.invoices import OrderOutcome
from fynd_simulator.orders import ErrorCode, Order


class OutcomeJson(TypedDict):
    orderId: str
    code: str | None  # None: invoiced by that call


class CallJson(TypedDict):
    seq: int
    at: float
    path: str
    query: dict[str, str]
    location_code: str | None
    token: str | None
    body: object
    order_ids: list[str]
    status: int | None  # None: the connection was dropped without an answer
    fault: str | None
    outcomes: list[OutcomeJson]


class InvoiceJson(TypedDict):
    invoiceNumber: str
    invoiceType: str


class OrderJson(TypedDict):
    state: str
    location: str | None
    attempts: int
    invoice_count: int
    invoices: list[InvoiceJson]
    confirm_after_attempts: int | None
    confirm_after_seconds: float | None
    kind: str
    reads: int


class StatsJson(TypedDict):
    token_requests: int
    tokens_issued: int
    calls: int
    orders_received: int
    invoiced: int
    duplicates: int
    max_orders_per_call: int
    faults_pending: int
    shipment_reads: int
    faulted_calls: dict[str, int]


@dataclass(frozen=True)
class CallRecord:
    """One Update Invoice call as received, with the answer it got."""

    seq: int
    at: float
    path: str
    query: dict[str, str]
    location_code: str | None
    token: str | None
    body: object  # the decoded JSON, or the raw text when it was not JSON
    order_ids: tuple[str, ...]
    status: int | None
    fault: str | None
    outcomes: tuple[OrderOutcome, ...]

    def to_json(self) -> CallJson:
        return {
            "seq": self.seq,
            "at": self.at,
            "path": self.path,
            "query": dict(self.query),
            "location_code": self.location_code,
            "token": self.token,
            "body": self.body,
            "order_ids": list(self.order_ids),
            "status": self.status,
            "fault": self.fault,
            "outcomes": [{"orderId": o.order_id, "code": o.code} for o in self.outcomes],
        }


@dataclass(frozen=True)
class OrderView:
    """An order's state and how often the simulator invoiced it."""

    order_id: str
    state: str
    location: str | None
    attempts: int
    invoice_count: int
    invoices: tuple[InvoiceJson, ...]
    confirm_after_attempts: int | None
    confirm_after_seconds: float | None
    kind: str = "forward"
    reads: int = 0

    @classmethod
    def of(cls, order_id: str, order: Order) -> "OrderView":
        return cls(
            order_id=order_id,
            state=str(order.state),
            location=order.location,
            attempts=order.attempts,
            invoice_count=len(order.invoices),
            invoices=tuple(
                {"invoiceNumber": i["invoiceNumber"], "invoiceType": i["invoiceType"]} for i in order.invoices
            ),
            confirm_after_attempts=order.confirm_after_attempts,
            confirm_after_seconds=order.confirm_after_seconds,
            kind=order.kind,
            reads=order.reads,
        )

    def to_json(self) -> OrderJson:
        return {
            "state": self.state,
            "location": self.location,
            "attempts": self.attempts,
            "invoice_count": self.invoice_count,
            "invoices": list(self.invoices),
            "confirm_after_attempts": self.confirm_after_attempts,
            "confirm_after_seconds": self.confirm_after_seconds,
            "kind": self.kind,
            "reads": self.reads,
        }


@dataclass(frozen=True)
class Stats:
    token_requests: int
    tokens_issued: int
    calls: int
    orders_received: int  # invoice objects across every call, refused calls included
    invoiced: int
    duplicates: int  # IN453 answers: each one is a duplicate that reached Fynd
    max_orders_per_call: int
    faults_pending: int
    shipment_reads: int = 0  # Get Shipment Info requests, answered or not
    faulted_calls: tuple[tuple[str, int], ...] = ()  # Update Invoice calls per fault kind met

    @classmethod
    def of(
        cls,
        calls: Sequence[CallRecord],
        token_requests: int,
        tokens_issued: int,
        faults_pending: int,
        shipment_reads: int = 0,
    ) -> "Stats":
        sizes = [len(c.body) for c in calls if isinstance(c.body, list)]
        outcomes = [o for c in calls for o in c.outcomes]
        return cls(
            token_requests=token_requests,
            tokens_issued=tokens_issued,
            calls=len(calls),
            orders_received=sum(sizes),
            invoiced=sum(1 for o in outcomes if o.code is None),
            duplicates=sum(1 for o in outcomes if o.code is ErrorCode.IN453),
            max_orders_per_call=max(sizes, default=0),
            faults_pending=faults_pending,
            shipment_reads=shipment_reads,
            faulted_calls=tuple(sorted(Counter(c.fault for c in calls if c.fault is not None).items())),
        )

    def to_json(self) -> StatsJson:
        return {
            "token_requests": self.token_requests,
            "tokens_issued": self.tokens_issued,
            "calls": self.calls,
            "orders_received": self.orders_received,
            "invoiced": self.invoiced,
            "duplicates": self.duplicates,
            "max_orders_per_call": self.max_orders_per_call,
            "faults_pending": self.faults_pending,
            "shipment_reads": self.shipment_reads,
            "faulted_calls": dict(self.faulted_calls),
        }
