"""What a call to Fynd's Update Invoice can come back with, as types the dispatcher can act on.

The Fynd client raises the errors and returns the receipts; the code policy reads them. A
`FyndCallError` means the call as a whole has no per-order answer we can trust.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from relay.domain.invoice import Invoice, InvoiceType

MAX_ORDERS_PER_CALL = 20
"""Fynd's published limit on invoice objects in one Update Invoice call."""


@dataclass(frozen=True)
class FyndCall:
    """One Update Invoice request: at most 20 invoices, one location, one invoice type.

    One invoice type per call keeps Fynd's per-order errors unambiguous: the errors name an
    orderId only, and an order may have a sale invoice and a credit note in flight at once.
    """

    location_code: str | None
    invoice_type: InvoiceType
    invoices: tuple[Invoice, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.invoices) <= MAX_ORDERS_PER_CALL:
            raise ValueError(
                f"a Fynd call carries 1 to {MAX_ORDERS_PER_CALL} invoices, not {len(self.invoices)}"
            )
        if len({invoice.orderId for invoice in self.invoices}) != len(self.invoices):
            raise ValueError("a Fynd call may name each order only once")


@dataclass(frozen=True)
class OrderError:
    """Fynd's per-order refusal, e.g. IN453 for an order already invoiced."""

    order_id: str
    code: str
    message: str


@dataclass(frozen=True)
class FyndReceipt:
    """Fynd's answer to one call: the orders it refused; every other order of the call succeeded."""

    call: FyndCall
    errors: Mapping[str, OrderError] = field(default_factory=dict)
    ack_id: str | None = None
    status: str = "SUCCESS"

    def error_for(self, order_id: str) -> OrderError | None:
        return self.errors.get(order_id)


class FyndCallError(Exception):
    """The call as a whole failed; no order of it may be recorded as invoiced or rejected."""

    reason = "fynd_error"

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class FyndUnavailable(FyndCallError):
    """5xx, timeout or connection refused before the request was sent: nothing happened."""

    reason = "fynd_unavailable"


class FyndThrottled(FyndCallError):
    """429: Fynd asks us to slow down, maybe with Retry-After."""

    reason = "fynd_throttled"


class FyndAmbiguous(FyndCallError):
    """The request may have been applied (connection dropped after sending, or an answer we
    cannot match to our orders). The retry may meet IN453, which then means success."""

    reason = "fynd_ambiguous"


class FyndAuthError(FyndCallError):
    """The credentials were refused, or a fresh token was refused again."""

    reason = "fynd_auth"


class FyndCallRefused(FyndCallError):
    """A whole-call 4xx other than 401/403/429 (a malformed or oversized body): Fynd refused
    the request as a whole and names no order. The dispatcher splits the call to find the one."""

    reason = "fynd_refused"
