"""Reading a webhook body into invoices, all or nothing, with errors a person can act on.

Each refusal is its own type so the edge maps it to one HTTP answer: 413, 415, 400 or 422.
Validation errors name the array index and the field path, never the value sent (it may be
a signed invoice or QR data).

Whatever the body holds is answered 400 or 422 here, before anything is written: JSON that
is not standard (NaN, Infinity, numbers beyond a float) or nested too deep for the parser
is a 400; an invoice nested deeper than MAX_NESTING_DEPTH, or holding a string that is not
valid Unicode (a lone surrogate such as "\\ud83d"), is a 422 naming the field. Both limits
exist because the queue message must carry the invoice to the dispatcher unchanged.
"""

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from relay.domain.errors import (
    FieldError,
    InvalidInvoices,
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from relay.domain.invoice import Invoice

MAX_INVOICES_PER_WEBHOOK = 100
MAX_NESTING_DEPTH = 16
"""Levels of objects and arrays in one invoice, the invoice object itself being the first.
The free-form `packages` needs about five; the queue message's parser stops near 200."""
MAX_ERRORS_PER_INVOICE = 20
E_INVOICE_GAP = (
    "eInvoiceRequired is true but the invoice has no irnNumber: send it once its e-invoice is"
    " generated (ERPNext: from the e-Invoice Log, docs/erpnext/README.md)"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_envelope(content_type: str | None, size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(size, limit)
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise UnsupportedMediaType(content_type)


def parse_invoices(body: str) -> list[Invoice]:
    """One invoice object or an array of 1 to 100; identical repeats of a key collapse into one."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise MalformedBody("body is nested too deeply to be read") from None
    except json.JSONDecodeError as error:
        # Where, never what: the position lets the sender find the fault, and no byte of the body is echoed.
        raise MalformedBody(
            f"body is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    except ValueError:
        raise MalformedBody("body is not valid JSON") from None
    if isinstance(document, dict):
        items: list[Any] = [document]
    elif isinstance(document, list):
        items = document
    else:
        raise MalformedBody("body must be a JSON object or an array of objects")
    if not 1 <= len(items) <= MAX_INVOICES_PER_WEBHOOK:
        raise InvalidInvoices(
            [FieldError(None, "", f"send 1 to {MAX_INVOICES_PER_WEBHOOK} invoices, not {len(items)}")]
        )
    invoices: list[Invoice] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        unreadable = _structure_errors(index, item)
        if unreadable:
            errors.extend(unreadable)
            continue
        try:
            invoice = Invoice.model_validate(item)
        except ValidationError as error:
            errors.extend(_field_errors(index, error))
            continue
        errors.extend(FieldError(index, field, E_INVOICE_GAP) for field in invoice.e_invoice_gaps())
        invoices.append(invoice)
    if errors:
        raise InvalidInvoices(errors)
    return _unique(invoices)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError("a number beyond the range of a float")
    return number


def _structure_errors(index: int, item: Any) -> list[FieldError]:
    """Nesting beyond MAX_NESTING_DEPTH and strings that are not Unicode, found without recursion."""
    errors: list[FieldError] = []
    pending: list[tuple[Any, int, str]] = [(item, 1, "")]
    while pending and len(errors) < MAX_ERRORS_PER_INVOICE:
        value, depth, path = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                errors.append(FieldError(index, path, "text is not valid Unicode (a lone surrogate)"))
            continue
        if isinstance(value, dict):
            children = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        else:
            continue
        if depth > MAX_NESTING_DEPTH:
            errors.append(FieldError(index, path, f"nested deeper than {MAX_NESTING_DEPTH} levels"))
            continue
        for name, child in reversed(children):
            if isinstance(name, str) and _SURROGATE.search(name):
                errors.append(FieldError(index, path, "a field name is not valid Unicode (a lone surrogate)"))
                break
            pending.append((child, depth + 1, f"{path}.{name}" if path else str(name)))
    return errors


def _field_errors(index: int, error: ValidationError) -> list[FieldError]:
    found = []
    for detail in error.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in detail["loc"])
        message = "unknown field" if detail["type"] == "extra_forbidden" else detail["msg"]
        found.append(FieldError(index, path, message))
    return found


def _unique(invoices: list[Invoice]) -> list[Invoice]:
    seen: dict[Any, tuple[int, Invoice]] = {}
    errors = []
    for index, invoice in enumerate(invoices):
        first = seen.get(invoice.key)
        if first is None:
            seen[invoice.key] = (index, invoice)
        elif first[1] != invoice:
            errors.append(
                FieldError(
                    index,
                    "orderId",
                    f"same orderId and invoiceType as index {first[0]}, different content",
                )
            )
    if errors:
        raise InvalidInvoices(errors)
    return [invoice for _, invoice in seen.values()]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Header lookup that ignores case, as HTTP does."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)
