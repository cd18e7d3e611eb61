"""An ERP's invoices, end to end: signed webhook, queue, Fynd, ledger."""

from factories import invoice_dict
from relay_client import RelayClient


def test_invoice_is_accepted_queued_and_invoiced_once(relay: RelayClient) -> None:
    # Given a confirmed order at Fynd
    # When the ERP posts its invoice
    answer = relay.post(invoice_dict("FY-1"))
    # Then it is accepted and queued
    assert answer.status == 202
    assert answer.body == {
        "invoices": [
            {"orderId": "FY-1", "invoiceType": "sale", "invoiceNumber": "INV-FY-1", "status": "QUEUED"}
        ]
    }
    # And ends INVOICED, sent to Fynd exactly once
    final = relay.wait_for_final(("FY-1", "sale"))[("FY-1", "sale")]
    assert final["status"] == "INVOICED"
    assert final["attempts"] == 1
    assert final["lastError"] is None
    assert relay.simulator.state.invoice_count("FY-1") == 1
