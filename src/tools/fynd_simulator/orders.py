"""Simulated Fynd orders: what one order answers to an invoice, and the default policy.

An order the simulator has never been told about gets its behaviour from its id's
prefix (see the package docstring), so an integrator can send anything and still hit
every Fynd error code. An explicit configuration replaces the prefix policy for that id.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypedDict

from fynd_simulator.replies import SimulatorConfigError

INVOICE_TYPES = frozenset({"sale", "return"})
EARLY_CONFIRM_AFTER_ATTEMPTS = 2
KINDS = ("forward", "return")


class OrderState(StrEnum):
    PENDING = "pending"  # not yet confirmed: IN403 until it flips to confirmed
    CONFIRMED = "confirmed"  # ready: an invoice succeeds and moves it to invoiced
    INVOICED = "invoiced"  # at or beyond invoiced: IN453
    CANCELLED = "cancelled"  # IN401
    BAD_INVOICE = "bad_invoice"  # every invoice breaks the rules: IN422
    UNKNOWN = "unknown"  # Fynd has no such order: IN400


class ErrorCode(StrEnum):
    IN400 = "IN400"
    IN401 = "IN401"
    IN403 = "IN403"
    IN422 = "IN422"
    IN453 = "IN453"


ERROR_MESSAGES: Mapping[ErrorCode, str] = {
    ErrorCode.IN400: "Order not found in the authorised location",
    ErrorCode.IN401: "Order or order item already cancelled",
    ErrorCode.IN403: "Invoicing attempted before the order was confirmed",
    ErrorCode.IN422: "Invoice identifiers or invoiceType break the invoicing rules",
    ErrorCode.IN453: "Shipment already at or beyond invoiced",
}

PREFIX_STATES: tuple[tuple[str, OrderState], ...] = (
    ("CANCELLED-", OrderState.CANCELLED),
    ("UNKNOWN-", OrderState.UNKNOWN),
    ("BADINV-", OrderState.BAD_INVOICE),
    ("INVOICED-", OrderState.INVOICED),
    ("EARLY-", OrderState.PENDING),
)
RETURN_PREFIX = "RETURN-"
"""An unconfigured id with this prefix is a return shipment (Shipment Info shows return
states); otherwise it behaves like any confirmed order."""

SHIPMENT_VIEWS: Mapping[tuple[str, OrderState], tuple[str, str]] = {
    ("forward", OrderState.PENDING): ("CREATED", "placed"),
    ("forward", OrderState.CONFIRMED): ("CONFIRMED", "bag_confirmed"),
    ("forward", OrderState.BAD_INVOICE): ("CONFIRMED", "bag_confirmed"),
    ("forward", OrderState.INVOICED): ("PROCESSING", "bag_invoiced"),
    ("forward", OrderState.CANCELLED): ("CANCELLED", "cancelled_customer"),
    ("return", OrderState.PENDING): ("DELIVERED", "return_bag_in_transit"),
    ("return", OrderState.CONFIRMED): ("DELIVERED", "return_bag_accepted"),
    ("return", OrderState.BAD_INVOICE): ("DELIVERED", "return_bag_accepted"),
    ("return", OrderState.INVOICED): ("DELIVERED", "credit_note_generated"),
    ("return", OrderState.CANCELLED): ("DELIVERED", "return_request_cancelled"),
}
"""(orderStatus, shipmentStatus) that Get Shipment Info shows per kind and state; the values
are the "Assumed" rows of docs/fynd-update-invoice.md. An order invoiced by a `return` invoice
shows `credit_note_generated` whatever its kind."""


@dataclass
class Order:
    """One shipment as Fynd sees it. Mutable; only `SimulatorState` touches it, under its lock."""

    state: OrderState
    location: str | None = None  # None: every location owns it
    confirm_after_attempts: int | None = None
    confirm_after_seconds: float | None = None
    pending_since: float = 0.0
    attempts: int = 0  # invoice objects received for this order, answered or not
    invoices: list[dict[str, str]] = field(default_factory=list)  # the ones applied
    kind: str = "forward"  # or "return": a return shipment awaiting its credit note
    reads: int = 0  # Shipment Info reads answered for this order

    def shipment_view(self, now: float) -> tuple[str, str] | None:
        """Count one Shipment Info read; (orderStatus, shipmentStatus), or None for an order
        Fynd does not know."""
        self.reads += 1
        self._confirm_if_due(now)
        if self.state is OrderState.UNKNOWN:
            return None
        if (
            self.state is OrderState.INVOICED
            and self.invoices
            and self.invoices[-1]["invoiceType"] == "return"
        ):
            return SHIPMENT_VIEWS[("return", OrderState.INVOICED)]
        return SHIPMENT_VIEWS[(self.kind, self.state)]

    def invoice(
        self, invoice_number: str, invoice_type: str, location: str | None, now: float
    ) -> ErrorCode | None:
        """Answer one invoice object: None for success (and apply it), else the error code."""
        self.attempts += 1
        self._confirm_if_due(now)
        if self.state is OrderState.UNKNOWN or (
            location is not None and self.location is not None and location != self.location
        ):
            return ErrorCode.IN400
        if self.kind == "return" and invoice_type == "sale":
            # A return shipment's forward leg was invoiced long ago, as Shipment Info shows.
            return ErrorCode.IN453
        if self.state is OrderState.INVOICED and self._invoiced_only_by_the_other_type(invoice_type):
            # The relay keys an invoice by (orderId, invoiceType): a credit note for an order
            # invoiced here is a document of its own (the return leg), not a duplicate.
            self._apply(invoice_number, invoice_type)
            return None
        code = _STATE_CODES.get(self.state)
        if code is not None:
            return code
        if invoice_type not in INVOICE_TYPES:
            return ErrorCode.IN422
        self._apply(invoice_number, invoice_type)
        return None

    def _apply(self, invoice_number: str, invoice_type: str) -> None:
        self.state = OrderState.INVOICED
        self.invoices.append({"invoiceNumber": invoice_number, "invoiceType": invoice_type})

    def _invoiced_only_by_the_other_type(self, invoice_type: str) -> bool:
        """True when this simulator applied invoices to the order, none of `invoice_type`: the
        sale invoice is there and the credit note is not (or the other way round). An order
        configured or named as invoiced (`INVOICED-`) was invoiced elsewhere, by both."""
        return (
            invoice_type in INVOICE_TYPES
            and bool(self.invoices)
            and all(applied["invoiceType"] != invoice_type for applied in self.invoices)
        )

    def _confirm_if_due(self, now: float) -> None:
        if self.state is not OrderState.PENDING:
            return
        # Reads count as contacts too: a relay that polls instead of resending still sees the
        # order confirm after the same number of contacts.
        contacts = self.attempts + self.reads
        by_attempts = self.confirm_after_attempts is not None and contacts > self.confirm_after_attempts
        by_time = (
            self.confirm_after_seconds is not None and now >= self.pending_since + self.confirm_after_seconds
        )
        if by_attempts or by_time:
            self.state = OrderState.CONFIRMED


_STATE_CODES: Mapping[OrderState, ErrorCode] = {
    OrderState.CANCELLED: ErrorCode.IN401,
    OrderState.INVOICED: ErrorCode.IN453,
    OrderState.PENDING: ErrorCode.IN403,
    OrderState.BAD_INVOICE: ErrorCode.IN422,
}


def order_by_prefix(order_id: str, now: float) -> Order:
    """The order an unconfigured id stands for: its prefix decides, confirmed otherwise."""
    if order_id.startswith(RETURN_PREFIX):
        return Order(OrderState.CONFIRMED, kind="return")
    for prefix, state in PREFIX_STATES:
        if order_id.startswith(prefix):
            if state is OrderState.PENDING:
                return Order(state, confirm_after_attempts=EARLY_CONFIRM_AFTER_ATTEMPTS, pending_since=now)
            return Order(state)
    return Order(OrderState.CONFIRMED)


class OrderOptions(TypedDict, total=False):
    """An order's configuration but its state: `configure_order`'s keyword arguments."""

    location: str
    confirm_after_attempts: int
    confirm_after_seconds: float
    kind: str


_CONFIG_KEYS = frozenset({"state", *OrderOptions.__optional_keys__})


def order_from_config(order_id: str, config: Mapping[str, object], now: float) -> Order:
    """Build an order from its admin configuration; raises SimulatorConfigError if invalid.

    Without a `state`, an order with a `confirm_after_*` rule starts pending, else confirmed.
    """
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise SimulatorConfigError(f"order {order_id!r}: unknown keys {sorted(unknown)}")
    attempts = _optional_int(order_id, config, "confirm_after_attempts")
    seconds = _optional_seconds(order_id, config, "confirm_after_seconds")
    location = config.get("location")
    if location is not None and not isinstance(location, str):
        raise SimulatorConfigError(f"order {order_id!r}: location must be a string")
    kind = config.get("kind", "forward")
    if kind not in KINDS:
        raise SimulatorConfigError(f"order {order_id!r}: kind must be one of {list(KINDS)}")
    timed = attempts is not None or seconds is not None
    raw_state = config.get("state", OrderState.PENDING if timed else OrderState.CONFIRMED)
    try:
        state = OrderState(str(raw_state))
    except ValueError:
        allowed = ", ".join(s.value for s in OrderState)
        raise SimulatorConfigError(f"order {order_id!r}: state must be one of {allowed}") from None
    return Order(
        state,
        location=location,
        confirm_after_attempts=attempts,
        confirm_after_seconds=seconds,
        pending_since=now,
        kind=str(kind),
    )


def _optional_int(order_id: str, config: Mapping[str, object], key: str) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SimulatorConfigError(f"order {order_id!r}: {key} must be an integer >= 0")
    return value


def _optional_seconds(order_id: str, config: Mapping[str, object], key: str) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SimulatorConfigError(f"order {order_id!r}: {key} must be a number >= 0")
    return float(value)
