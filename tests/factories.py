"""Invoices and webhook bodies for tests: valid by default, one keyword away from any variant."""

from typing import Any

from relay.domain.invoice import Invoice


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
