"""What the simulator remembers, as frozen snapshots that are also the control API's JSON.

One pydantic model per record. `GET /_sim/calls`, `/_sim/orders` and `/_sim/stats` send
`model_dump(by_alias=True, mode="json")` of them, and `SimulatorControl` validates the same
models back from that JSON, so in-process and out-of-process tests read the same objects.
Field names are the JSON's, but for the camelCase ones Fynd itself uses (`orderId`,
`invoiceNumber`, `invoiceType`), which are aliases.
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fynd_simulator.orders import ErrorCode, Order


class Record(BaseModel):
    """Frozen; built by field name in Python, read by alias from the JSON."""

    model_config = ConfigDict(frozen=True, validate_by_name=True)


class OrderOutcome(Record):
    """What one order of a call got."""

    order_id: str = Field(alias="orderId")
    code: ErrorCode | None  # None: invoiced by that call


class CallRecord(Record):
    """One Update Invoice call as received, with the answer it got."""

    seq: int
    at: float
    path: str
    query: dict[str, str]
    location_code: str | None
    token: str | None
    body: Any  # the decoded JSON, or the raw text when it was not JSON
    order_ids: tuple[str, ...]
    status: int | None  # None: the connection was dropped without an answer
    fault: str | None
    outcomes: tuple[OrderOutcome, ...]


class AppliedInvoice(Record):
    """An invoice the simulator applied to an order."""

    invoice_number: str = Field(alias="invoiceNumber")
    invoice_type: str = Field(alias="invoiceType")


class OrderView(Record):
    """An order's state and how often the simulator invoiced it."""

    state: str
    location: str | None
    attempts: int
    invoice_count: int
    invoices: tuple[AppliedInvoice, ...]
    confirm_after_attempts: int | None
    confirm_after_seconds: float | None
    kind: str = "forward"
    reads: int = 0

    @classmethod
    def of(cls, order: Order) -> "OrderView":
        return cls(
            state=str(order.state),
            location=order.location,
            attempts=order.attempts,
            invoice_count=len(order.invoices),
            invoices=tuple(AppliedInvoice.model_validate(invoice) for invoice in order.invoices),
            confirm_after_attempts=order.confirm_after_attempts,
            confirm_after_seconds=order.confirm_after_seconds,
            kind=order.kind,
            reads=order.reads,
        )


class Stats(Record):
    token_requests: int
    tokens_issued: int
    calls: int
    orders_received: int  # invoice objects across every call, refused calls included
    invoiced: int
    duplicates: int  # IN453 answers: each one is a duplicate that reached Fynd
    max_orders_per_call: int
    faults_pending: int
    shipment_reads: int = 0  # Get Shipment Info requests, answered or not
    faulted_calls: dict[str, int] = Field(default_factory=dict)  # Update Invoice calls per fault kind met

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
            faulted_calls=dict(sorted(Counter(c.fault for c in calls if c.fault is not None).items())),
        )
