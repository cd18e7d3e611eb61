"""The pack's Webhooks on a simulated site through India Compliance's whole e-invoice flow:
every doc event the flow fires, in order, each Webhook run as Frappe runs it
(erpnext_simulator.webhooks). What reaches the relay, and when."""

import json
from collections.abc import Iterator
from typing import Any

import pytest

from erpnext_simulator import FrappeSite
from erpnext_simulator.webhooks import Attempt, FrappeRequest, WebhookRunner
from frappe_sender import E_INVOICE_WEBHOOK, SALE_WEBHOOK, e_invoice_log, sales_invoice, webhook_document

RELAY_URL = "https://relay.example/v1/invoices"
E_INVOICE_FIELDS = {"irnNumber", "ackNumber", "ackDate", "signedInvoice", "invoiceQrCode"}


class Relay:
    """Records what reaches the relay's URL, answering 202."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    def __call__(self, url: str, request: FrappeRequest, timeout: float) -> Attempt:
        assert url == RELAY_URL
        self.received.append(json.loads(request.body))
        return Attempt(202, '{"invoices": []}', "")


@pytest.fixture
def site() -> FrappeSite:
    return FrappeSite(validate_links=False)


@pytest.fixture
def relay(site: FrappeSite) -> Iterator[Relay]:
    relay = Relay()
    runner = WebhookRunner(
        site,
        [webhook_document(SALE_WEBHOOK), webhook_document(E_INVOICE_WEBHOOK)],
        request_url=RELAY_URL,
        sender=relay,
    )
    site.on_event(runner)
    relay.settle = runner.join  # type: ignore[attr-defined]
    yield relay
    runner.close()


def draft(**changes: Any) -> dict[str, Any]:
    document = dict(sales_invoice(**changes))
    document["docstatus"] = 0
    return document


def received_after(relay: Relay, step: Any) -> list[dict[str, Any]]:
    before = len(relay.received)
    step()
    relay.settle()  # type: ignore[attr-defined]
    return relay.received[before:]


def test_an_auto_generated_e_invoice_reaches_the_relay_once_at_its_log_complete(
    site: FrappeSite, relay: Relay
) -> None:
    name = "SINV-26-00042"
    log = e_invoice_log()
    steps = [
        ("draft saved", lambda: site.insert("Sales Invoice", draft(irn=None, einvoice_status=None))),
        # validate sets Pending on submit, on_submit enqueues the generation after commit
        (
            "submitted",
            lambda: site.update("Sales Invoice", name, {"docstatus": 1, "einvoice_status": "Pending"}),
        ),
        # generate_e_invoice: db_set irn and Generated (on_change), then enqueues _log_e_invoice
        (
            "IRN set",
            lambda: site.db_set("Sales Invoice", name, {"irn": log.irn, "einvoice_status": "Generated"}),
        ),
        ("payment", lambda: site.db_set("Sales Invoice", name, {"status": "Paid"})),
        ("log written", lambda: site.insert("e-Invoice Log", dict(log))),
    ]
    sent = {label: received_after(relay, step) for label, step in steps}
    # Then nothing was sent before the log existed, and exactly one invoice with it, complete
    assert [label for label, bodies in sent.items() if bodies] == ["log written"]
    (body,) = sent["log written"]
    assert body.keys() >= E_INVOICE_FIELDS
    assert (body["orderId"], body["eInvoiceRequired"]) == ("FY-30001", True)


def test_a_manually_generated_e_invoice_is_sent_when_it_is_marked(site: FrappeSite, relay: Relay) -> None:
    name = "SINV-26-00042"
    site.insert("Sales Invoice", draft(irn=None, einvoice_status=None))
    assert not received_after(
        relay, lambda: site.update("Sales Invoice", name, {"docstatus": 1, "einvoice_status": "Pending"})
    )
    log = e_invoice_log(signed_invoice=None, signed_qr_code=None)

    def mark_as_generated() -> None:  # mark_e_invoice_as_generated -> log_and_process_e_invoice_generation
        site.db_set("Sales Invoice", name, {"irn": log.irn, "einvoice_status": "Manually Generated"})
        site.insert("e-Invoice Log", dict(log))

    (body,) = received_after(relay, mark_as_generated)
    assert {"irnNumber", "ackNumber", "ackDate"} <= body.keys()


def test_a_b2c_invoice_is_sent_once_on_submit(site: FrappeSite, relay: Relay) -> None:
    site.insert("Sales Invoice", draft(irn=None, einvoice_status=None))
    (body,) = received_after(
        relay,
        lambda: site.update(
            "Sales Invoice", "SINV-26-00042", {"docstatus": 1, "einvoice_status": "Not Applicable"}
        ),
    )
    assert not E_INVOICE_FIELDS & body.keys()
    assert not received_after(
        relay, lambda: site.db_set("Sales Invoice", "SINV-26-00042", {"status": "Paid"})
    )


def test_an_undelivered_webhook_leaves_three_failed_request_log_rows_with_its_body(site: FrappeSite) -> None:
    runner = WebhookRunner(
        site,
        [webhook_document(SALE_WEBHOOK)],
        request_url=RELAY_URL,
        sender=Relay(),
        undelivered=lambda _data: True,
    )
    site.on_event(runner)
    site.insert("Sales Invoice", draft(irn=None, einvoice_status=None))
    site.update("Sales Invoice", "SINV-26-00042", {"docstatus": 1, "einvoice_status": "Not Applicable"})
    runner.join()
    runner.close()
    rows = site.documents("Webhook Request Log")
    assert len(rows) == 3
    assert all(row["error"] and row["url"] == RELAY_URL for row in rows)
    assert json.loads(rows[0]["data"])["orderId"] == "FY-30001"


def test_on_a_frappe_that_restricts_template_globals_the_b2b_body_fails_loudly_not_silently(
    site: FrappeSite,
) -> None:
    # Given a newer Frappe rendering Webhook bodies without frappe.get_doc (no disable_render_safe_exec)
    relay = Relay()
    runner = WebhookRunner(
        site,
        [webhook_document(E_INVOICE_WEBHOOK)],
        request_url=RELAY_URL,
        sender=relay,
        restricted_globals=True,
    )
    site.on_event(runner)
    # When India Compliance writes the e-Invoice Log
    site.insert("Sales Invoice", draft())
    site.insert("e-Invoice Log", dict(e_invoice_log()))
    runner.join()
    runner.close()
    # Then nothing reaches the relay, and the Webhook Request Log holds a row with no body and the error
    assert relay.received == []
    (row,) = site.documents("Webhook Request Log")
    assert row["data"] is None
    assert row["error"]
    assert row["reference_document"] == e_invoice_log().irn
