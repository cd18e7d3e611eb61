"""`relay recover --since`: the local relay takes in what a simulated ERPNext gave up sending,
from its Webhook Request Log, over HTTP and the relay's own ledger and queue."""

import json
from collections.abc import Iterator

import pytest

from erpnext_simulator import ErpnextSimulator
from factories import invoice_dict
from relay_cli_support import run_relay
from relay_client import RelayClient

RELAY_URL = "https://relay.example/v1/invoices"


@pytest.fixture
def erp() -> Iterator[ErpnextSimulator]:
    with ErpnextSimulator() as simulator:
        yield simulator


def failed_delivery(erp: ErpnextSimulator, document: dict[str, object], attempts: int = 3) -> None:
    for _ in range(attempts):
        erp.site.insert(
            "Webhook Request Log",
            {
                "webhook": "Fynd Relay - Sales Invoice",
                "reference_doctype": "Sales Invoice",
                "reference_document": str(document["invoiceNumber"]),
                "url": RELAY_URL,
                "data": json.dumps(document, indent=1, sort_keys=True),
                "error": "Traceback (most recent call last):\n...\nrequests.exceptions.HTTPError: 503 Server Error",
            },
        )


def recover_args(erp: ErpnextSimulator) -> tuple[str, ...]:
    """`relay recover` over everything the simulated site logged, as JSON."""
    return (
        "recover",
        "--since",
        "2000-01-01",
        "--erpnext-url",
        erp.url,
        "--api-key",
        erp.api_key,
        "--api-secret",
        erp.api_secret,
        "--relay-url",
        RELAY_URL,
        "--json",
    )


def test_recover_takes_in_each_failed_delivery_once_and_fynd_invoices_each_once(
    relay: RelayClient, erp: ErpnextSimulator
) -> None:
    # Given five deliveries ERPNext gave up on (three failed rows each) and one bad body
    orders = [f"FY-RCV-{n}" for n in range(5)]
    for order_id in orders:
        failed_delivery(erp, invoice_dict(order_id))
    failed_delivery(erp, invoice_dict("FY-RCV-BAD", eInvoiceRequired=True), attempts=1)
    args = recover_args(erp)
    # When the operator runs recovery
    run = run_relay(relay, *args)
    # Then it reports what it found, took in, already knew and refused (and says so in its exit code)
    assert run.exit_code == 1, run.stderr
    report = run.json()
    assert {key: report[key] for key in ("found", "takenIn", "alreadyKnown", "refused")} == {
        "found": 16,
        "takenIn": 5,
        "alreadyKnown": 10,
        "refused": 1,
    }
    assert "irnNumber" in next(row["detail"] for row in report["rows"] if row["outcome"] == "refused")
    assert erp.api_secret not in run.stdout + run.stderr
    # And every invoice reaches Fynd once
    relay.wait_for_final(*[(order_id, "sale") for order_id in orders])
    # When it runs again, Then everything is already known and Fynd sees nothing new
    again = run_relay(relay, *args).json()
    assert (again["takenIn"], again["alreadyKnown"]) == (0, 15)
    assert [relay.simulator.state.invoice_count(order_id) for order_id in orders] == [1] * 5


def test_a_row_frappe_never_sent_makes_recover_ask_for_attention(
    relay: RelayClient, erp: ErpnextSimulator
) -> None:
    # Given a delivery that failed, and a row Frappe wrote without a body (its template failed)
    failed_delivery(erp, invoice_dict("FY-RCV-OK"), attempts=1)
    erp.site.insert(
        "Webhook Request Log", {"url": RELAY_URL, "data": None, "error": "Traceback ...\nUndefinedError"}
    )
    # When recovery runs, Then it takes in the one and reports the other as empty, exiting 1
    run = run_relay(relay, *recover_args(erp))
    assert run.exit_code == 1, run.stderr
    assert (run.json()["takenIn"], run.json()["empty"], run.json()["refused"]) == (1, 1, 0)
