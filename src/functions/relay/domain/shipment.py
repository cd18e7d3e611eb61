"""What Fynd's Get Shipment Info answer proves about one order, for one invoice type.

The relay reads it before sending an invoice again after an ambiguous outcome, and while an
order answered IN403 waits for confirmation. The rule is one-sided on purpose: only positive
proof may stop a send (INVOICED) or end an invoice without one (CANCELLED); anything the
table below does not recognise, and any two fields that disagree, prove nothing (UNKNOWN),
and the caller then does what it would have done without the read.

Sale invoices read both fields; the values are the "Assumed" rows of
docs/fynd-update-invoice.md (Fynd publishes the orderStatus mapping, not the bag states):

| field (value)                                         | says             |
| ----------------------------------------------------- | ---------------- |
| bag state `bag_invoiced` or a later one (`SALE_INVOICED_BAGS`) | invoiced |
| orderStatus beyond PROCESSING (`PACKED`, `DISPATCHED`, `DELIVERED`, ...) | invoiced |
| bag state `cancelled_*` (`SALE_CANCELLED_BAGS`), orderStatus `CANCELLED` | cancelled |
| bag state `bag_confirmed`, orderStatus `CONFIRMED`    | confirmed, not invoiced |
| bag state `placed`, orderStatus `CREATED`             | not confirmed, not invoiced |
| orderStatus `PROCESSING`                              | nothing alone (confirmed or invoiced) |

Credit notes (`invoiceType: return`) read the bag state only (the orderStatus describes the
forward order): `credit_note_generated` says invoiced, `return_bag_accepted` and
`rto_bag_accepted` say ready, the earlier return states say not yet, and
`return_request_cancelled` says cancelled.

| result       | proves                                   | the caller                         |
| ------------ | ---------------------------------------- | ---------------------------------- |
| INVOICED     | at or beyond invoiced                    | records INVOICED, sends nothing    |
| CANCELLED    | cancelled                                | a waiting order ends REJECTED IN401 |
| READY        | confirmed and not invoiced               | sends (a waiting order: now, once) |
| NOT_INVOICED | not invoiced and not yet confirmed       | a waiting order keeps waiting      |
| UNKNOWN      | nothing                                  | does what it did before the read   |

READY and NOT_INVOICED both prove "not invoiced", so after an ambiguous outcome both mean
"send again". A READY drawn from `CONFIRMED` alone rests on Fynd's published mapping
(`bag_invoiced` → PROCESSING, so CONFIRMED is before invoicing).
"""

from dataclasses import dataclass
from enum import StrEnum

from relay.domain.invoice import InvoiceType


@dataclass(frozen=True)
class ShipmentInfo:
    """The fields of one Get Shipment Info entry the relay reads, normalised; no other content.

    `found` is False when the answer held no entry for the order (then every field is None).
    """

    order_id: str
    found: bool
    order_status: str | None = None
    """orderStatus, upper case (CREATED, CONFIRMED, PROCESSING, ...)."""
    bag_status: str | None = None
    """The bag state (shipmentStatus, status or bagStatus), lower case (bag_confirmed, ...)."""
    order_type: str | None = None
    locked: bool | None = None
    """Fynd's lock status, when the entry carries a boolean one; not used to decide."""


class ShipmentState(StrEnum):
    INVOICED = "invoiced"
    CANCELLED = "cancelled"
    READY = "ready"
    NOT_INVOICED = "not_invoiced"
    UNKNOWN = "unknown"

    @property
    def proves_not_invoiced(self) -> bool:
        return self in (ShipmentState.READY, ShipmentState.NOT_INVOICED)


class _Says(StrEnum):
    INVOICED = "invoiced"
    CANCELLED = "cancelled"
    CONFIRMED = "confirmed"
    PRE_CONFIRMATION = "pre_confirmation"
    PROCESSING = "processing"  # orderStatus only: confirmed or invoiced, proves neither
    UNRECOGNISED = "unrecognised"


SALE_INVOICED_BAGS = frozenset(
    {
        "bag_invoiced",
        "dp_assigned",
        "bag_packed",
        "bag_dispatched",
        "in_transit",
        "out_for_delivery",
        "delivery_attempt_failed",
        "delivery_done",
        "handed_over_to_customer",
        "rto_initiated",
        "rto_in_transit",
        "rto_bag_delivered",
        "rto_bag_accepted",
        "return_initiated",
        "return_bag_picked",
        "return_bag_in_transit",
        "return_bag_delivered",
        "return_bag_accepted",
        "credit_note_generated",
    }
)
"""Bag states at or beyond `bag_invoiced` for a forward shipment. Deliberately left out
(so they prove nothing): states whose place before or after invoicing we cannot vouch
for, e.g. `bag_picked`, `ready_for_dp_assignment`, `out_for_pickup`."""
SALE_CANCELLED_BAGS = frozenset({"cancelled_customer", "cancelled_fynd", "cancelled_seller", "cancelled"})
SALE_CONFIRMED_BAGS = frozenset({"bag_confirmed"})
SALE_PRE_CONFIRMATION_BAGS = frozenset({"placed", "bag_placed", "created"})

ORDER_STATUS_SAYS = {
    "CREATED": _Says.PRE_CONFIRMATION,
    "CONFIRMED": _Says.CONFIRMED,
    "PROCESSING": _Says.PROCESSING,
    "PACKED": _Says.INVOICED,
    "READY_TO_SHIP": _Says.INVOICED,
    "DISPATCHED": _Says.INVOICED,
    "SHIPPED": _Says.INVOICED,
    "IN_TRANSIT": _Says.INVOICED,
    "OUT_FOR_DELIVERY": _Says.INVOICED,
    "DELIVERED": _Says.INVOICED,
    "RETURNED": _Says.INVOICED,
    "RTO": _Says.INVOICED,
    "CANCELLED": _Says.CANCELLED,
}
"""orderStatus values read for sale invoices. Fynd publishes CONFIRMED (bag_confirmed) and
PROCESSING (bag_invoiced, dp_assigned); CREATED and the values beyond PROCESSING are assumed."""

RETURN_BAG_SAYS = {
    "credit_note_generated": _Says.INVOICED,
    "return_bag_accepted": _Says.CONFIRMED,
    "rto_bag_accepted": _Says.CONFIRMED,
    "return_initiated": _Says.PRE_CONFIRMATION,
    "return_accepted": _Says.PRE_CONFIRMATION,
    "return_bag_picked": _Says.PRE_CONFIRMATION,
    "return_bag_in_transit": _Says.PRE_CONFIRMATION,
    "return_bag_delivered": _Says.PRE_CONFIRMATION,
    "rto_initiated": _Says.PRE_CONFIRMATION,
    "rto_in_transit": _Says.PRE_CONFIRMATION,
    "rto_bag_delivered": _Says.PRE_CONFIRMATION,
    "return_request_cancelled": _Says.CANCELLED,
}
"""Bag states read for credit notes: accepted returns may get one (Fynd: `return_bag_accepted`
or RTO accepted), `credit_note_generated` means it exists. Refund states are left out: a
refund may precede the credit note."""

_RESULTS = {
    frozenset({_Says.INVOICED}): ShipmentState.INVOICED,
    frozenset({_Says.INVOICED, _Says.PROCESSING}): ShipmentState.INVOICED,
    frozenset({_Says.CANCELLED}): ShipmentState.CANCELLED,
    frozenset({_Says.CONFIRMED}): ShipmentState.READY,
    frozenset({_Says.CONFIRMED, _Says.PROCESSING}): ShipmentState.READY,
    frozenset({_Says.PRE_CONFIRMATION}): ShipmentState.NOT_INVOICED,
    frozenset({_Says.PRE_CONFIRMATION, _Says.CONFIRMED}): ShipmentState.NOT_INVOICED,
}
"""Every combination of what the two fields say that proves something; anything else (a
value we do not recognise, PROCESSING alone, fields that disagree) is UNKNOWN. Fields that
disagree only on confirmation (CONFIRMED and a pre-confirmation state) are read as not yet
confirmed: a waiting order then waits one more poll, which costs little."""


def classify_shipment(info: ShipmentInfo, invoice_type: InvoiceType) -> ShipmentState:
    """What this answer proves about the invoice of `invoice_type` for the order."""
    if not info.found:
        return ShipmentState.UNKNOWN
    if invoice_type is InvoiceType.RETURN:
        said = [_bag_says(info.bag_status, RETURN_BAG_SAYS)]
    else:
        said = [_bag_says(info.bag_status, _SALE_BAG_SAYS), _order_says(info.order_status)]
    present = {says for says in said if says is not None}
    if _Says.UNRECOGNISED in present:
        return ShipmentState.UNKNOWN
    return _RESULTS.get(frozenset(present), ShipmentState.UNKNOWN)


_SALE_BAG_SAYS = {
    **dict.fromkeys(SALE_INVOICED_BAGS, _Says.INVOICED),
    **dict.fromkeys(SALE_CANCELLED_BAGS, _Says.CANCELLED),
    **dict.fromkeys(SALE_CONFIRMED_BAGS, _Says.CONFIRMED),
    **dict.fromkeys(SALE_PRE_CONFIRMATION_BAGS, _Says.PRE_CONFIRMATION),
}


def _bag_says(value: str | None, table: dict[str, _Says]) -> _Says | None:
    return None if value is None else table.get(value, _Says.UNRECOGNISED)


def _order_says(value: str | None) -> _Says | None:
    return None if value is None else ORDER_STATUS_SAYS.get(value, _Says.UNRECOGNISED)
