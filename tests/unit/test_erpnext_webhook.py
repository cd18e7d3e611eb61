"""The shipped ERPNext Webhook documents (docs/erpnext/), rendered and fired as Frappe does.

B2C (no e-invoice) goes on the Sales Invoice's submit; B2B goes when India Compliance inserts
the invoice's e-Invoice Log, which holds the acknowledgement, the signed invoice and the QR
code ("Manually Generated" included). No B2B invoice is sent before its log exists.
"""

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from frappe_sender import (
    DOCS,
    E_INVOICE_WEBHOOK,
    SALE_WEBHOOK,
    e_invoice_log,
    fires,
    frappe_request,
    render,
    sales_invoice,
    webhook_document,
)
from relay.domain.invoice import Invoice
from relay.domain.webhook import parse_invoices

SECRET = "frappe-secret-typed-into-erpnext-0001"
BODIES = {SALE_WEBHOOK: "sales-invoice-body.jinja", E_INVOICE_WEBHOOK: "e-invoice-log-body.jinja"}
EVENTS = {SALE_WEBHOOK: ("Sales Invoice", "on_submit"), E_INVOICE_WEBHOOK: ("e-Invoice Log", "after_insert")}


@pytest.mark.parametrize("name", list(BODIES))
def test_each_webhook_document_imports_as_a_disabled_json_webhook_with_the_shipped_body(name: str) -> None:
    document = webhook_document(name)
    assert document["doctype"] == "Webhook"
    assert (document["webhook_doctype"], document["webhook_docevent"]) == EVENTS[name]
    assert document["request_structure"] == "JSON"
    assert document["request_method"] == "POST"
    # Shipped off and without a secret: Frappe refuses "Enable Security" without one, and the
    # operator sets the URL and the secret before enabling it (docs/erpnext/README.md).
    assert (document["enabled"], document["enable_security"]) == (0, 0)
    assert "webhook_secret" not in document
    assert document["webhook_json"] == (DOCS / BODIES[name]).read_text()


def test_a_b2b_invoice_is_sent_from_its_e_invoice_log_with_every_e_invoice_field() -> None:
    # Given the e-Invoice Log India Compliance inserts for a generated e-invoice
    log, invoice = e_invoice_log(), sales_invoice()
    webhook = webhook_document(E_INVOICE_WEBHOOK)
    assert fires(webhook, log)
    # When Frappe renders the shipped body
    data = render(webhook, log, invoice)
    # Then it is the invoice with its e-invoice, every field from the log
    assert data == {
        "orderId": "FY-30001",
        "invoiceNumber": "SINV-26-00042",
        "invoiceType": "sale",
        "eInvoiceRequired": True,
        "irnNumber": log.irn,
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


def test_a_manually_generated_e_invoice_is_sent_with_what_its_log_holds() -> None:
    # Given a log from "Mark as Generated": India Compliance records IRN and acknowledgement only
    log = e_invoice_log(signed_invoice=None, signed_qr_code=None, invoice_data=None)
    data = render(
        webhook_document(E_INVOICE_WEBHOOK), log, sales_invoice(einvoice_status="Manually Generated")
    )
    # Then it is sent with the IRN and the acknowledgement, and the relay accepts it
    assert {"irnNumber", "ackNumber", "ackDate"} <= data.keys()
    assert not {"signedInvoice", "invoiceQrCode"} & data.keys()
    assert len(parse_invoices(json.dumps(data))) == 1


def test_an_older_india_compliance_log_linked_by_sales_invoice_works_too() -> None:
    log = e_invoice_log(reference_doctype=None, reference_name=None, sales_invoice="SINV-26-00042")
    webhook = webhook_document(E_INVOICE_WEBHOOK)
    assert fires(webhook, log)
    assert render(webhook, log, sales_invoice())["invoiceNumber"] == "SINV-26-00042"


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("a cancellation's log", {"is_cancelled": 1}),
        ("another doctype's log", {"reference_doctype": "Purchase Invoice"}),
        ("a log without an IRN", {"irn": None}),
    ],
)
def test_logs_that_are_no_generated_sales_invoice_e_invoice_do_not_fire(
    name: str, changes: dict[str, Any]
) -> None:
    assert not fires(webhook_document(E_INVOICE_WEBHOOK), e_invoice_log(**changes))


def test_a_b2c_invoice_and_a_credit_note_without_e_invoice_are_sent_on_submit() -> None:
    sale = webhook_document(SALE_WEBHOOK)
    credit_note = sales_invoice("sales-invoice-return.json")  # einvoice_status "Not Applicable"
    b2c = sales_invoice(irn=None, einvoice_status="Not Applicable")
    no_india_compliance = sales_invoice(irn=None, einvoice_status=None)
    assert all(fires(sale, doc) for doc in (credit_note, b2c, no_india_compliance))
    assert render(sale, credit_note) == {
        "orderId": "FY-30002",
        "invoiceNumber": "CN-26-00007",
        "invoiceType": "return",
        "orderItems": [{"orderItemId": "FY-30002-1", "quantity": 1}],
    }
    assert "eInvoiceRequired" not in render(sale, b2c)
    assert not fires(sale, sales_invoice("sales-invoice-return.json", custom_fynd_shipment_id=None))


def test_no_b2b_invoice_is_sent_before_its_log_exists() -> None:
    # Given the Sales Invoice events of an e-invoiced sale before India Compliance writes the
    # log: submit (validate set it Pending), the IRN's db_set (on_change), a payment (on_change),
    # a Failed or Auto-Retry generation (db_set)
    before_log = [
        ("on_submit", sales_invoice(irn=None, einvoice_status="Pending")),
        ("on_change", sales_invoice(irn=None, einvoice_status="Pending")),
        ("on_change", sales_invoice()),
        ("on_change", sales_invoice(status="Paid")),
        ("on_update_after_submit", sales_invoice()),
        ("on_change", sales_invoice(irn=None, einvoice_status="Failed")),
        ("on_change", sales_invoice(irn=None, einvoice_status="Auto-Retry")),
        ("on_change", sales_invoice(einvoice_status="Manually Generated")),
    ]
    webhooks = [webhook_document(name) for name in BODIES]
    # Then no Webhook of the pack fires on any of them: the only one that sends a B2B invoice
    # listens to the e-Invoice Log's insert
    fired = [
        (event, webhook["name"])
        for event, doc in before_log
        for webhook in webhooks
        if webhook["webhook_doctype"] == "Sales Invoice"
        and webhook["webhook_docevent"] == event
        and fires(webhook, doc)
    ]
    assert fired == []


def test_frappe_signs_exactly_the_bytes_it_sends() -> None:
    data = render(webhook_document(E_INVOICE_WEBHOOK), e_invoice_log(), sales_invoice())
    request = frappe_request(data, SECRET)
    assert request.body == json.dumps(data).encode()
    assert "Content-Type" not in request.headers
    signature = base64.b64encode(hmac.new(SECRET.encode(), request.body, hashlib.sha256).digest()).decode()
    assert request.headers["X-Frappe-Webhook-Signature"] == signature
