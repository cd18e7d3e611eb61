"""The shipped ERPNext Webhook documents (docs/erpnext/), rendered as Frappe renders them."""

import base64
import hashlib
import hmac
import json

import pytest

from frappe_sender import (
    DOCS,
    E_INVOICE_WEBHOOK,
    SALE_WEBHOOK,
    e_invoice_logs,
    fires,
    frappe_request,
    render,
    sales_invoice,
    webhook_document,
)
from relay.domain.invoice import Invoice
from relay.domain.webhook import parse_invoices

WEBHOOKS = [SALE_WEBHOOK, E_INVOICE_WEBHOOK]
SECRET = "frappe-secret-typed-into-erpnext-0001"


@pytest.mark.parametrize("name", WEBHOOKS)
def test_each_webhook_document_imports_as_a_disabled_json_webhook_with_the_shipped_body(name: str) -> None:
    document = webhook_document(name)
    assert document["doctype"] == "Webhook"
    assert document["webhook_doctype"] == "Sales Invoice"
    assert document["request_structure"] == "JSON"
    assert document["request_method"] == "POST"
    # Shipped off and without a secret: Frappe refuses "Enable Security" without one, and the
    # operator sets the URL and the secret before enabling it (docs/erpnext/README.md).
    assert (document["enabled"], document["enable_security"]) == (0, 0)
    assert "webhook_secret" not in document
    assert document["webhook_json"] == (DOCS / "sales-invoice-body.jinja").read_text()


def test_the_sale_renders_every_mapped_field() -> None:
    # Given a submitted Sales Invoice whose e-invoice India Compliance has generated
    doc = sales_invoice()
    # When Frappe renders the shipped body
    data = render(webhook_document(E_INVOICE_WEBHOOK), doc, e_invoice_logs())
    # Then it is this relay invoice: the custom field, the name, the e-invoice, the Fynd rows
    log = e_invoice_logs()[doc.irn]
    assert data == {
        "orderId": "FY-30001",
        "invoiceNumber": "SINV-26-00042",
        "invoiceType": "sale",
        "irnNumber": doc.irn,
        "ackNumber": "182610045719832",
        "ackDate": "2026-11-20 14:32:05",
        "signedInvoice": log.signed_invoice,
        "invoiceQrCode": log.signed_qr_code,
        "orderItems": [
            {"orderItemId": "FY-30001-1", "quantity": 1},
            {
                "orderItemId": "FY-30001-2",
                "quantity": 2,
                "imeiSerialNumber": ["356938035643809", "356938035643817"],
            },
        ],
    }
    # And the relay accepts it as one valid invoice
    assert parse_invoices(json.dumps(data)) == [Invoice.model_validate(data)]


def test_the_return_renders_a_return_with_positive_quantities() -> None:
    # Given a credit note (is_return, negative quantities), without an e-invoice
    doc = sales_invoice("sales-invoice-return.json")
    # When Frappe renders the shipped body
    data = render(webhook_document(SALE_WEBHOOK), doc, e_invoice_logs())
    # Then it is a return for its shipment, quantities as Fynd counts them
    assert data == {
        "orderId": "FY-30002",
        "invoiceNumber": "CN-26-00007",
        "invoiceType": "return",
        "orderItems": [{"orderItemId": "FY-30002-1", "quantity": 1}],
    }
    assert len(parse_invoices(json.dumps(data))) == 1


def test_e_invoice_fields_kept_on_the_invoice_itself_are_read_too() -> None:
    # Given an older regional setup: everything on the Sales Invoice, no e-Invoice Log
    doc = sales_invoice(
        ack_no=182610045719832, ack_date="2026-11-20 14:32:05", signed_einvoice="jwt", signed_qr_code="qr"
    )
    data = render(webhook_document(SALE_WEBHOOK), doc, {})
    assert (data["ackNumber"], data["ackDate"], data["signedInvoice"], data["invoiceQrCode"]) == (
        "182610045719832",
        "2026-11-20 14:32:05",
        "jwt",
        "qr",
    )


def test_an_invoice_without_fynd_rows_sends_no_order_items() -> None:
    doc = sales_invoice()
    for row in doc["items"]:
        row["custom_fynd_order_item_id"] = None
    assert "orderItems" not in render(webhook_document(SALE_WEBHOOK), doc, e_invoice_logs())


def test_on_submit_waits_for_the_e_invoice_and_the_e_invoice_webhook_sends_it_once_generated() -> None:
    sale, e_invoice = webhook_document(SALE_WEBHOOK), webhook_document(E_INVOICE_WEBHOOK)
    # Given an e-invoiced sale at submit: India Compliance marks it Pending and generates after commit
    at_submit = sales_invoice(irn=None, einvoice_status="Pending")
    # Then neither fires yet (an invoice without its IRN would be final at Fynd)
    assert not fires(sale, at_submit)
    assert not fires(e_invoice, at_submit)
    # When the IRN is set (db_set runs on_change), Then the e-invoice webhook fires
    assert fires(e_invoice, sales_invoice())
    # And an invoice without e-invoicing, or not for Fynd, is sent at submit, or never
    assert fires(sale, sales_invoice("sales-invoice-return.json"))
    assert not fires(sale, sales_invoice("sales-invoice-return.json", custom_fynd_shipment_id=None))
    assert not fires(e_invoice, sales_invoice(docstatus=2))


def test_frappe_signs_exactly_the_bytes_it_sends() -> None:
    # Given the rendered data of the sale
    data = render(webhook_document(E_INVOICE_WEBHOOK), sales_invoice(), e_invoice_logs())
    # When Frappe sends it
    request = frappe_request(data, SECRET)
    # Then the body is json.dumps of the data, with no content type, signed over those very bytes
    assert request.body == json.dumps(data).encode()
    assert "Content-Type" not in request.headers
    signature = base64.b64encode(hmac.new(SECRET.encode(), request.body, hashlib.sha256).digest()).decode()
    assert request.headers["X-Frappe-Webhook-Signature"] == signature
