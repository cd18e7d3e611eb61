"""The Update Invoice payload as the simulator checks it, and the two answer envelopes.

Fynd takes a JSON array of 1 to 20 invoice objects. The simulator refuses anything else
with 400 before looking at a single order, so a client that sends 21 finds out at once.
"""

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fynd_simulator.orders import ERROR_MESSAGES
from fynd_simulator.records import OrderOutcome

MAX_INVOICES_PER_CALL = 20
REQUIRED_FIELDS = ("orderId", "invoiceNumber", "invoiceType")

type Envelope = Literal["camel", "snake"]
ENVELOPES: tuple[Envelope, ...] = ("camel", "snake")


class PayloadError(ValueError):
    """The body is not an Update Invoice payload (HTTP 400)."""


@dataclass(frozen=True)
class Invoice:
    order_id: str
    invoice_number: str
    invoice_type: str


NOT_JSON = object()  # decode_body's answer for a body that is not JSON at all


def decode_body(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return NOT_JSON


def order_ids_in(body: object) -> list[str]:
    """Every orderId string a body names, for the records, even when the body is refused."""
    if not isinstance(body, list):
        return []
    return [
        item["orderId"] for item in body if isinstance(item, Mapping) and isinstance(item.get("orderId"), str)
    ]


def parse_invoices(body: object) -> list[Invoice]:
    """The invoices in a decoded body; raises PayloadError naming the first thing wrong."""
    if body is NOT_JSON:
        raise PayloadError("body is not JSON")
    if not isinstance(body, list):
        raise PayloadError("body must be a JSON array of invoice objects")
    if not 1 <= len(body) <= MAX_INVOICES_PER_CALL:
        raise PayloadError(f"body must hold 1 to {MAX_INVOICES_PER_CALL} invoices, got {len(body)}")
    invoices = []
    for index, item in enumerate(body):
        if not isinstance(item, Mapping):
            raise PayloadError(f"[{index}] must be a JSON object")
        for name in REQUIRED_FIELDS:
            value = item.get(name)
            if not isinstance(value, str) or not value:
                raise PayloadError(f"[{index}].{name} is required and must be a non-empty string")
        invoices.append(Invoice(item["orderId"], item["invoiceNumber"], item["invoiceType"]))
    return invoices


def render_result(outcomes: Sequence[OrderOutcome], envelope: Envelope) -> dict[str, object]:
    """The 200 answer: Fynd's camelCase shape, or the snake_case `data`/`meta` envelope."""
    failed = [o for o in outcomes if o.code is not None]
    success_count = len(outcomes) - len(failed)
    if not failed:
        status = "SUCCESS"
    elif success_count:
        status = "PARTIAL"
    else:
        status = "FAILED"
    if envelope == "snake":
        return {
            "data": {
                "payload_count": len(outcomes),
                "success_count": success_count,
                "failed_count": len(failed),
                "errors": [
                    {"order_id": o.order_id, "error_code": str(o.code), "message": _message(o)}
                    for o in failed
                ],
            },
            "meta": {"ack_id": uuid.uuid4().hex, "status": status},
        }
    return {
        "payloadCount": len(outcomes),
        "successCount": success_count,
        "failedCount": len(failed),
        "status": status,
        "errors": [{"orderId": o.order_id, "code": str(o.code), "message": _message(o)} for o in failed],
    }


def _message(outcome: OrderOutcome) -> str:
    return "" if outcome.code is None else ERROR_MESSAGES[outcome.code]


def render_unconfirmed(shape: str, outcomes: Sequence[OrderOutcome], envelope: Envelope) -> dict[str, object]:
    """A 200 body that confirms nothing (see faults.UnconfirmedFault), from the real outcomes."""
    fixed: dict[str, dict[str, object]] = {
        "empty": {},
        "success_false": {"success": False},
        "error": {"error": "Something went wrong while updating invoices"},
        "message": {"message": "Request received"},
        "data_null": {"data": None},
    }
    if shape in fixed:
        return fixed[shape]
    real = render_result(outcomes, envelope)
    counts: dict[str, object] = real["data"] if envelope == "snake" else real  # type: ignore[assignment]
    if shape == "string_counts":
        for name in (
            "payloadCount",
            "successCount",
            "failedCount",
            "payload_count",
            "success_count",
            "failed_count",
        ):
            if name in counts:
                counts[name] = str(counts[name])
        return real
    if shape == "bad_counts":
        name = "payload_count" if envelope == "snake" else "payloadCount"
        counts[name] = len(outcomes) + 1
        return real
    if shape == "failed_some":
        errors = counts.get("errors")
        named = errors[:-1] if isinstance(errors, list) else []
        return {"status": "FAILED", "errors": named}
    raise ValueError(f"unknown unconfirmed shape {shape!r}")
