"""Reading what Fynd answers, as docs/fynd-update-invoice.md says the relay must: tolerant of
shape, strict about what counts as proof. Pure functions over bytes; the HTTP is fynd.py's.

The confirmation rule for Update Invoice (the spec's "partial failure" row):

| the 2xx answer                                              | orders it names | the others |
| ----------------------------------------------------------- | --------------- | ---------- |
| integer counts, payloadCount = orders sent, successCount +  | their errors    | invoiced   |
| failedCount = payloadCount, failedCount = errors named, and |                 |            |
| status absent, SUCCESS or PARTIAL                           |                 |            |
| no counts at all, status exactly SUCCESS, errors `[]`        | (none)          | invoiced   |
| anything else: `{}`, `{"data": null}`, `{"success": false}`, | their errors    | ambiguous  |
| an `error`, a string count, counts that do not add up,      |                 |            |
| `FAILED` naming only some orders                            |                 |            |
| `errors` not a list, an entry naming no order of this call, | nothing usable  | ambiguous  |
| one order named with two different codes, not JSON          |                 |            |

Named errors survive an unconfirmed rest (FyndAmbiguous.answered) because each is Fynd's
explicit word on one of our orders; they are dropped when any entry cannot be matched,
because then the answer may not be about this call at all.
"""

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from relay.domain.fynd import FyndAmbiguous, FyndCall, FyndReceipt, OrderError
from relay.domain.shipment import ShipmentInfo

CONFIRMING_STATUSES = frozenset({"SUCCESS", "PARTIAL"})
MAX_DETAIL_CHARS = 200
_UNREADABLE = "?unreadable"


def read_receipt(call: FyndCall, http_status: int, raw: bytes) -> FyndReceipt:
    """The receipt an answer proves, or FyndAmbiguous for every order it does not confirm."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise FyndAmbiguous(
            f"Fynd answered {http_status} with a body that is not JSON", status=http_status
        ) from error
    if not isinstance(document, dict):
        raise FyndAmbiguous(
            f"Fynd answered {http_status} with a body that is not an object", status=http_status
        )
    data: dict[str, Any] = document["data"] if isinstance(document.get("data"), dict) else document
    meta: dict[str, Any] = document["meta"] if isinstance(document.get("meta"), dict) else {}
    errors = _named_errors(call, data, http_status)
    status = meta.get("status", data.get("status"))
    unnamed = len(call.invoices) - len(errors)
    if unnamed:
        doubt = _doubt(document, data, status, len(call.invoices), len(errors))
        if doubt is not None:
            raise FyndAmbiguous(
                f"Fynd's {http_status} does not confirm {unnamed} of {len(call.invoices)} orders: {doubt}",
                status=http_status,
                answered=errors,
            )
    ack_id = meta.get("ack_id") or data.get("ack_id") or data.get("ackId")
    shown = status.upper() if isinstance(status, str) and status else "SUCCESS"
    return FyndReceipt(call, errors, str(ack_id) if ack_id else None, shown)


def _named_errors(call: FyndCall, data: Mapping[str, Any], http_status: int) -> dict[str, OrderError]:
    raw_errors = data.get("errors")
    if raw_errors is None:
        return {}
    if not isinstance(raw_errors, list):
        raise FyndAmbiguous("Fynd's errors field is not a list", status=http_status)
    orders = {invoice.orderId for invoice in call.invoices}
    errors: dict[str, OrderError] = {}
    for raw in raw_errors:
        order_error = _order_error(raw)
        if order_error is None or order_error.order_id not in orders:
            raise FyndAmbiguous(
                "Fynd named an error we cannot match to an order of the call", status=http_status
            )
        earlier = errors.get(order_error.order_id)
        if earlier is not None and earlier.code != order_error.code:
            raise FyndAmbiguous("Fynd gave one order two different codes", status=http_status)
        errors[order_error.order_id] = order_error
    return errors


def _doubt(
    document: Mapping[str, Any], data: Mapping[str, Any], status: object, sent: int, named: int
) -> str | None:
    """Why the answer does not confirm the orders it leaves unnamed; None when it does."""
    if document.get("success") is False or data.get("success") is False:
        return "success is false"
    if document.get("error") or data.get("error"):
        return "it carries an error"
    counts = [
        _first_present(data, "payloadCount", "payload_count"),
        _first_present(data, "successCount", "success_count"),
        _first_present(data, "failedCount", "failed_count"),
    ]
    if all(count is _ABSENT for count in counts):
        if status == "SUCCESS" and data.get("errors") == []:
            return None
        return "no counts, and not an exact SUCCESS with an empty errors list"
    if not all(isinstance(count, int) and not isinstance(count, bool) for count in counts):
        return "its counts are not all integers"
    payload, success, failed = counts
    if payload != sent or success + failed != payload or failed != named:  # type: ignore[operator]
        return f"counts {payload}/{success}/{failed} do not add up to {sent} sent and {named} named"
    if status is not None and status not in CONFIRMING_STATUSES:
        return "its status is neither SUCCESS nor PARTIAL"
    return None


_ABSENT = object()


def _first_present(raw: Mapping[str, Any], *names: str) -> object:
    for name in names:
        if name in raw:
            return raw[name]
    return _ABSENT


def _order_error(raw: Any) -> OrderError | None:
    if not isinstance(raw, Mapping):
        return None
    order_id = _first(raw, "orderId", "order_id", "shipmentId", "shipment_id")
    code = _first(raw, "code", "error_code", "errorCode")
    message = _first(raw, "message", "error_message", "errorMessage", "reason") or ""
    if not order_id or not code:
        return None
    return OrderError(order_id, code, message)


def _first(raw: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = raw.get(name)
        if value not in (None, ""):
            return str(value)
    return None


def refusal_detail(http_status: int, raw: bytes) -> str:
    """A short, printable reason for a whole-call refusal: Fynd's own words when it gave any."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        document = None
    text = None
    if isinstance(document, dict):
        text = next(
            (
                value
                for name in ("detail", "message", "error", "title", "reason")
                if isinstance(value := document.get(name), str) and value.strip()
            ),
            None,
        )
    if text is None:
        try:
            text = HTTPStatus(http_status).phrase
        except ValueError:
            text = f"HTTP {http_status}"
    printable = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return printable[:MAX_DETAIL_CHARS]


def read_shipment_info(order_id: str, raw: bytes) -> ShipmentInfo:
    """The entry for `order_id` in a Get Shipment Info answer, read defensively.

    `{"orders": [...]}` (also inside `data`, or `data` as the list itself); an entry counts
    only when it names the order (`id`, `orderId`, `order_id`, `shipmentId`, `shipment_id`).
    No such entry: found=False. Several that disagree: found=True with no fields, which
    proves nothing. A value that is not a string is kept as an unreadable marker, which the
    classification does not recognise.
    """
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return ShipmentInfo(order_id, found=False)
    entries = _entries(document)
    infos = {
        _info(order_id, entry)
        for entry in entries
        if isinstance(entry, Mapping)
        and _first(entry, "id", "orderId", "order_id", "shipmentId", "shipment_id") == order_id
    }
    if not infos:
        return ShipmentInfo(order_id, found=False)
    if len(infos) > 1:
        return ShipmentInfo(order_id, found=True)
    return infos.pop()


def _entries(document: Any) -> list[Any]:
    if not isinstance(document, dict):
        return []
    data = document.get("data")
    if isinstance(data, list):
        return data
    container = data if isinstance(data, dict) else document
    orders = container.get("orders")
    return orders if isinstance(orders, list) else []


def _info(order_id: str, entry: Mapping[str, Any]) -> ShipmentInfo:
    order_status = _status_text(_first_value(entry, "orderStatus", "order_status"))
    bag = _first_value(entry, "shipmentStatus", "shipment_status", "bagStatus", "bag_status", "status")
    if isinstance(bag, Mapping):
        bag = _first_value(bag, "status", "current_status", "currentStatus")
    bag_status = _status_text(bag)
    order_type = _status_text(_first_value(entry, "orderType", "order_type", "type"))
    locked = _first_value(entry, "lockStatus", "lock_status", "isLocked", "locked")
    return ShipmentInfo(
        order_id,
        found=True,
        order_status=order_status.upper() if order_status else None,
        bag_status=bag_status.lower() if bag_status else None,
        order_type=order_type,
        locked=locked if isinstance(locked, bool) else None,
    )


def _first_value(raw: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = raw.get(name)
        if value not in (None, ""):
            return value
    return None


def _status_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return _UNREADABLE
