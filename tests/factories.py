"""Invoices and webhook bodies for tests: valid by default, one keyword away from any variant."""

from typing import Any

from relay.domain.invoice import Invoice, InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus, LedgerEntry


def invoice_dict(order_id: str = "FY-1001", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "orderId": order_id,
        "invoiceNumber": f"INV-{order_id}",
        "invoiceType": "sale",
    }
    document.update(fields)
    return {name: value for name, value in document.items() if value is not None}


def invoice(order_id: str = "FY-1001", **fields: Any) -> Invoice:
    return Invoice.model_validate(invoice_dict(order_id, **fields))


def ledger_entry(
    status: InvoiceStatus, *, accepted_at: float, updated_at: float, **fields: Any
) -> LedgerEntry:
    """The ledger entry of FY-1's sale invoice in `status`, at its first attempt, for tables of
    the reconciler's rules."""
    return LedgerEntry(
        key=InvoiceKey("FY-1", InvoiceType.SALE),
        status=status,
        content_hash="h",
        invoice_number="INV-1",
        attempts=1,
        accepted_at=accepted_at,
        updated_at=updated_at,
        **fields,
    )
