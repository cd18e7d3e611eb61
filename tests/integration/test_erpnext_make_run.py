"""`ERPNEXT_SIMULATOR=1 make run`: the README's walk-through (docs/erpnext/README.md, "Try it
locally"), as an admin does it over HTTP: submit an invoice in the simulated site, see it
reach the relay and Fynd, and its request logged as Frappe logs it."""

import json
import signal
import time
from urllib.parse import quote, urlencode

import urllib3
from test_local_run import _URL, start_run  # `make run`'s process, as its own test starts it

HTTP = urllib3.PoolManager()


def test_make_run_with_the_erpnext_simulator_sends_a_submitted_invoice_through_the_pack() -> None:
    # Given `ERPNEXT_SIMULATOR=1 make run` (its process, on free ports)
    run = start_run({"ERPNEXT_SIMULATOR": "1", "ERPNEXT_SIMULATOR_PORT": "0"})
    try:
        run.wait_for_output("Ctrl-C stops everything")
        erp = run.wait_for_output(rf"ERPNext +{_URL}").group(1)
        run.api_url = run.wait_for_output(rf"API +{_URL}").group(1)
        assert "frappe        preset enabled" in run.text()
        auth = {"Authorization": "token erpnext-sim-key:erpnext-sim-secret"}
        # When the admin creates the customer and submits a B2C invoice, as the README shows
        HTTP.request(
            "POST", f"{erp}/api/resource/Customer", body=b'{"name": "Fynd Marketplace"}', headers=auth
        )
        invoice = {
            "name": "SINV-26-00001",
            "customer": "Fynd Marketplace",
            "docstatus": 1,
            "einvoice_status": "Not Applicable",
            "is_return": 0,
            "custom_fynd_shipment_id": "FY-20001",
            "items": [
                {"idx": 1, "item_code": "TSHIRT-M", "qty": 1, "custom_fynd_order_item_id": "FY-20001-1"}
            ],
        }
        created = HTTP.request(
            "POST",
            f"{erp}/api/resource/{quote('Sales Invoice')}",
            body=json.dumps(invoice).encode(),
            headers=auth,
        )
        assert created.status == 200
        # Then the relay has it and Fynd invoices it
        assert run.wait_for_final(["FY-20001"])["FY-20001"]["status"] == "INVOICED"
        # And the site's Webhook Request Log holds Frappe's successful request with the relay's 202
        query = urlencode({"fields": json.dumps(["reference_document", "response", "error", "url"])})
        deadline = time.monotonic() + 10
        while True:
            rows = HTTP.request(
                "GET", f"{erp}/api/resource/{quote('Webhook Request Log')}?{query}", headers=auth
            ).json()["data"]
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        (row,) = rows
        assert (row["reference_document"], row["error"], row["url"]) == (
            "SINV-26-00001",
            "",
            f"{run.api_url}/v1/invoices",
        )
        assert json.loads(row["response"])["invoices"][0]["status"] == "QUEUED"
    finally:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGINT)
            run.process.wait(timeout=20)
    assert run.process.returncode == 0
