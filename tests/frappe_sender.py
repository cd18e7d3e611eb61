"""The shipped ERPNext documents (docs/erpnext/), rendered and sent exactly as Frappe does.

The rendering, the condition and the request's bytes are the ERPNext simulator's
(`erpnext_simulator.webhooks`, which says what of Frappe it follows); this module adds the
fixtures: realistic Sales Invoices and India Compliance's e-Invoice Log rows.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from erpnext_simulator.answers import FrappeError
from erpnext_simulator.webhooks import (
    FrappeDict,
    FrappeRequest,
    as_frappe,
    condition_holds,
    frappe_request,
)
from erpnext_simulator.webhooks import render as render_with

DOCS = Path(__file__).resolve().parents[1] / "docs" / "erpnext"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "erpnext"
SALE_WEBHOOK = "webhook-sales-invoice.json"
E_INVOICE_WEBHOOK = "webhook-e-invoice-log.json"

__all__ = [
    "DOCS",
    "E_INVOICE_WEBHOOK",
    "SALE_WEBHOOK",
    "FrappeDict",
    "FrappeRequest",
    "e_invoice_log",
    "e_invoice_logs",
    "fires",
    "frappe_request",
    "render",
    "sales_invoice",
    "webhook_document",
]


def webhook_document(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DOCS / name).read_text())
    return document


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def sales_invoice(name: str = "sales-invoice.json", /, **changes: Any) -> FrappeDict:
    document: FrappeDict = as_frappe({**fixture(name), **changes})
    return document


def e_invoice_logs() -> dict[str, FrappeDict]:
    """The e-Invoice Log rows India Compliance writes, by IRN (as the webhook's `doc`: dates as text)."""
    return {row["irn"]: as_frappe(row) for row in fixture("e-invoice-logs.json")}


def e_invoice_log(**changes: Any) -> FrappeDict:
    """The log of the fixture sale, with `changes` (e.g. a "Manually Generated" one: no signed data)."""
    (log,) = e_invoice_logs().values()
    changed: FrappeDict = as_frappe({**log, **changes})
    return changed


def render(webhook: Mapping[str, Any], doc: Mapping[str, Any], *invoices: Mapping[str, Any]) -> Any:
    """get_webhook_data(): the data Frappe sends for `doc`, with `invoices` readable by frappe.get_doc."""
    by_name = {invoice["name"]: invoice for invoice in invoices}

    def get_doc(doctype: str, name: str) -> Any:
        if doctype != "Sales Invoice" or name not in by_name:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
        return as_frappe(by_name[name])

    return render_with(webhook, doc, get_doc)


def fires(webhook: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
    """run_webhooks(): whether the Webhook's condition holds for `doc` (Frappe's safe_eval)."""
    return condition_holds(webhook, doc)
