"""ERPNext write-back end to end, smoke: `ERPNEXT_SIMULATOR=1 make run` as run.py builds it, the
pack's Webhooks into the relay, and every outcome back into the same site's `Fynd Invoice Sync`
records, through a write-back outage of the site (its REST API answering 502 for those records).
"""

import time
from urllib.parse import unquote

from erpnext_simulator import Fault
from frappe_sender import sales_invoice
from relay_client import RelayClient
from relay_local.erpnext import LocalErpnext

INVOICES = 40
OUTAGE_SECONDS = 20


def submit(erpnext: LocalErpnext, number: int) -> tuple[str, str]:
    """A B2C invoice submitted in the site: its Webhook sends it to the relay."""
    site = erpnext.simulator.site
    name, order_id = f"SINV-26-{number:05d}", f"FY-WB-{number:05d}"
    document = dict(
        sales_invoice(name=name, custom_fynd_shipment_id=order_id, irn=None, einvoice_status=None)
    )
    document["docstatus"] = 0
    document["items"] = [
        dict(row, custom_fynd_order_item_id=f"{order_id}-{row['idx']}") for row in document["items"]
    ]
    site.insert("Sales Invoice", document)
    site.update("Sales Invoice", name, {"docstatus": 1, "einvoice_status": "Not Applicable"})
    return name, order_id


def test_every_sync_record_ends_matching_the_ledger_after_a_write_back_outage(
    erpnext_and_relay: tuple[LocalErpnext, RelayClient],
) -> None:
    erpnext, relay = erpnext_and_relay
    site = erpnext.simulator
    site.site.insert("Customer", {"name": "Fynd Marketplace", "customer_name": "Fynd Marketplace"})
    # Given the site's Fynd Invoice Sync records unreachable (502) for the first seconds, and
    # some orders Fynd has cancelled
    site.faults.add(
        Fault(kind="status", status=502, seconds_total=OUTAGE_SECONDS, doctype="Fynd Invoice Sync")
    )
    for number in range(0, INVOICES, 7):
        relay.simulator.state.configure_order(f"FY-WB-{number:05d}", "cancelled")
    # When 40 invoices are submitted
    started = time.monotonic()
    invoices = dict(submit(erpnext, number) for number in range(INVOICES))
    assert erpnext.runner is not None
    erpnext.runner.join()
    finals = relay.wait_for_final(*[(order_id, "sale") for order_id in invoices.values()], timeout=120)

    # Then every invoice gets one sync record, linked to its Sales Invoice, matching the ledger
    def records() -> dict[str, dict[str, object]]:
        return {str(doc["fynd_order_id"]): doc for doc in site.site.documents("Fynd Invoice Sync")}

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        current = records()
        if all(
            (doc := current.get(order_id)) is not None
            and (doc["status"], doc["relay_updated_at"])
            == (finals[(order_id, "sale")]["status"], finals[(order_id, "sale")]["updatedAt"])
            for order_id in invoices.values()
        ):
            break
        time.sleep(0.5)
    current = records()
    assert len(site.site.documents("Fynd Invoice Sync")) == INVOICES
    for name, order_id in invoices.items():
        doc, final = current[order_id], finals[(order_id, "sale")]
        assert (doc["sales_invoice"], doc["status"], doc["relay_updated_at"]) == (
            name,
            final["status"],
            final["updatedAt"],
        )
        assert doc["fynd_code"] == (final["lastError"] or {}).get("code", "")
    assert {doc["status"] for doc in current.values()} == {"INVOICED", "REJECTED"}
    # And the outage was met: the site answered 502 to write-back, and it caught up after
    refused = [r for r in site.site.requests if r.status == 502 and "Fynd Invoice Sync" in unquote(r.path)]
    assert refused
    assert time.monotonic() - started > OUTAGE_SECONDS
