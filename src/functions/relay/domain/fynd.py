"""Fynd's Update Invoice as the domain sees it: the call, its planning (one location and type,
20 orders and a byte cap per call), its receipt, and the typed failures a call can end in.

The Fynd client raises the errors and returns the receipts; the code policy reads them. A
`FyndCallError` means the call as a whole has no per-order answer we can trust."""

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from relay.domain.invoice import Invoice, InvoiceType

MAX_ORDERS_PER_CALL = 20
"""Fynd's published limit on invoice objects in one Update Invoice call."""

MAX_CALL_BYTES = 256 * 1024
"""Our cap on one call's JSON body. Fynd publishes no size limit, but the front ends such
APIs sit behind commonly refuse bodies above 1 MiB (nginx's default `client_max_body_size`)
with a 413 for the whole call. A quarter of that keeps 20 ordinary invoices (a few KiB
each) in one call, leaves room for a gateway with a smaller limit, and caps the work one
refused call puts at risk. An invoice alone above the cap still gets a call of its own."""


def encode_invoices(invoices: Iterable[Invoice]) -> bytes:
    """The Update Invoice body, byte for byte as the client sends it: a compact JSON array."""
    return json.dumps([invoice.to_fynd() for invoice in invoices], separators=(",", ":")).encode()


def encoded_size(invoice: Invoice) -> int:
    """The bytes one invoice object adds to a body (plus one comma between objects)."""
    return len(encode_invoices((invoice,))) - 2


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
    """Fynd's answer to one call: the orders it refused; every other order of the call succeeded.

    Only the Fynd client builds one, and only when the answer positively confirms every
    order it does not name (see the confirmation rule in docs/fynd-update-invoice.md);
    anything less is raised as FyndAmbiguous instead."""

    call: FyndCall
    errors: Mapping[str, OrderError] = field(default_factory=dict)
    ack_id: str | None = None
    status: str = "SUCCESS"

    def error_for(self, order_id: str) -> OrderError | None:
        return self.errors.get(order_id)


class FyndCallError(Exception):
    """The call as a whole failed; no order of it may be recorded as invoiced or rejected."""

    reason = "fynd_error"
    nothing_sent = False
    """True when the failure proves Fynd applied nothing of the call (the request never left,
    or Fynd refused it whole): a later attempt need not read Shipment Info for it."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class FyndUnavailable(FyndCallError):
    """5xx, connection refused, or out of time before the request was sent. A 5xx proves
    nothing: a gateway may answer 502/504 after Fynd applied the call."""

    reason = "fynd_unavailable"


class FyndNotSent(FyndUnavailable):
    """The request never left: the connection was refused or not made in time, the credentials
    could not be read, or too little time was left to start it. Fynd applied nothing."""

    nothing_sent = True


class FyndThrottled(FyndCallError):
    """429: Fynd asks us to slow down, maybe with Retry-After."""

    reason = "fynd_throttled"
    nothing_sent = True


class FyndAmbiguous(FyndCallError):
    """The request may have been applied (connection dropped after sending, or an answer that
    does not confirm every order). The retry may meet IN453, which then means success.

    `answered` holds Fynd's own per-order errors when the answer named some orders clearly
    but did not confirm the rest (e.g. `status: FAILED` naming only some orders, or counts
    that do not add up). Each is Fynd's explicit word on that order, matched to an order of
    this call, so acting on it is as sound as acting on a fully confirmed answer; only the
    unnamed orders are in doubt. Empty when nothing in the answer can be trusted (no
    answer at all, or an error we cannot match to our orders, which means the answer may
    not be about this call). A caller that ignores `answered` treats the whole call as
    ambiguous, which is always safe: it only costs a resend.
    """

    reason = "fynd_ambiguous"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        answered: Mapping[str, OrderError] | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, status=status)
        self.answered: Mapping[str, OrderError] = MappingProxyType(dict(answered or {}))

    def error_for(self, order_id: str) -> OrderError | None:
        """Fynd's named error for this order, or None when the order's outcome is in doubt."""
        return self.answered.get(order_id)


class FyndCallRefused(FyndCallError):
    """A whole-call 4xx other than 401/403/429 (400, 413, 422, ...): Fynd refused the body as
    a whole and applied nothing. It names no order, so one bad invoice may be sinking the
    rest: split the call and send the halves. An invoice refused alone is rejected with
    `status` (e.g. 413) and `detail` (a short reason, at most 200 printable characters from
    Fynd's answer, or the HTTP reason phrase; the message ends with it too)."""

    reason = "fynd_refused"
    nothing_sent = True

    def __init__(self, message: str, *, status: int, detail: str | None = None) -> None:
        super().__init__(message, status=status)
        self.detail = detail if detail is not None else message

    @property
    def code(self) -> str:
        """The code a rejection records, e.g. `HTTP413`."""
        return f"HTTP{self.status}"


class FyndAuthError(FyndCallError):
    """The credentials were refused, or a fresh token was refused again."""

    reason = "fynd_auth"
    nothing_sent = True


def plan_calls(
    invoices: Iterable[Invoice], limit: int = MAX_ORDERS_PER_CALL, max_bytes: int = MAX_CALL_BYTES
) -> list[FyndCall]:
    """Few calls that respect both caps, keeping the invoices' order within each group.

    Each group is cut greedily: an invoice starts a new call when the current one holds
    `limit` invoices or when adding it would take the body above `max_bytes` (the body the
    client sends, `encode_invoices`, so the two cannot drift). An invoice that is above the
    cap on its own still gets a call of its own: Fynd, not us, decides whether to refuse it.

    The caller passes each invoice key once; two invoices for one order (a sale and a credit
    note) land in different calls because they differ in type.
    """
    groups: dict[tuple[str | None, InvoiceType], list[Invoice]] = defaultdict(list)
    for invoice in invoices:
        groups[(invoice.locationCode, invoice.invoiceType)].append(invoice)
    return [
        FyndCall(location_code, invoice_type, tuple(chunk))
        for (location_code, invoice_type), group in groups.items()
        for chunk in _chunks(group, limit, max_bytes)
    ]


def _chunks(items: Sequence[Invoice], limit: int, max_bytes: int) -> Iterator[list[Invoice]]:
    chunk: list[Invoice] = []
    size = 2  # the array's brackets
    for item in items:
        added = encoded_size(item) + (1 if chunk else 0)  # a comma between objects
        if chunk and (len(chunk) >= limit or size + added > max_bytes):
            yield chunk
            chunk, size, added = [], 2, added - 1
        chunk.append(item)
        size += added
    if chunk:
        yield chunk
