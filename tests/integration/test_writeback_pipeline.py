"""Smoke: write-back through the whole local runtime (moto's ledger stream, WritebackFeedFunction,
the FIFO queue, WritebackFunction) to a Frappe stub and a Standard Webhooks receiver over HTTP,
while both are down for the first seconds."""

import time
from collections.abc import Iterator

import pytest

from factories import invoice_dict
from relay_client import FAST_RETRIES, RelayClient
from relay_local.environment import WritebackTargets
from relay_local.pipeline import LocalPipeline, PipelineConfig
from relay_local.signing import new_secret
from writeback_world import CallbackReceiver, FrappeStub

CALLBACK_SECRET = new_secret()


@pytest.fixture
def erp() -> Iterator[tuple[FrappeStub, CallbackReceiver]]:
    with FrappeStub() as frappe, CallbackReceiver(CALLBACK_SECRET) as receiver:
        yield frappe, receiver


def wait_until(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError("not within the time allowed")


def test_final_states_reach_erpnext_and_the_callback_after_an_outage(
    erp: tuple[FrappeStub, CallbackReceiver],
) -> None:
    frappe, receiver = erp
    frappe.down, receiver.answer_with = True, 503
    config = PipelineConfig(
        webhook_secret=new_secret(),
        environment={**FAST_RETRIES, "WRITEBACK_RETRY_BASE_SECONDS": "1", "WRITEBACK_RETRY_MAX_SECONDS": "2"},
        writeback=WritebackTargets(
            erpnext_url=frappe.url,
            erpnext_api_key="relay-key",
            erpnext_api_secret="relay-secret",
            callback_url=receiver.url + "/outcomes",
            callback_secret=CALLBACK_SECRET,
        ),
    )
    with LocalPipeline(config) as pipeline:
        relay = RelayClient(pipeline, config.webhook_secret)
        # Given three invoices, one of an order Fynd has cancelled, while the ERP is down
        relay.simulator.state.configure_order("WB-CANCELLED", "cancelled")
        orders = ["WB-1", "WB-2", "WB-CANCELLED"]
        assert relay.post([invoice_dict(order) for order in orders]).status == 202
        relay.wait_for_final(*[(order, "sale") for order in orders])
        time.sleep(2)  # write-back has failed and backs off
        assert frappe.records == {}
        # When the ERP comes back
        frappe.down, receiver.answer_with = False, 204

        # Then each invoice's record matches the status API, the rejection with its code
        def in_step() -> bool:
            for order in orders:
                record = frappe.records.get(f"{order}-sale")
                status = relay.status(order).body
                if record is None or (record["status"], record["relay_updated_at"]) != (
                    status["status"],
                    status["updatedAt"],
                ):
                    return False
            return True

        wait_until(in_step)
        assert frappe.records["WB-CANCELLED-sale"]["fynd_code"] == "IN401"
        assert frappe.records["WB-1-sale"]["sales_invoice"] == invoice_dict("WB-1")["invoiceNumber"]
        # And the callback receiver verified and holds each invoice's last state
        wait_until(lambda: {document["orderId"] for _, document in receiver.received} >= set(orders))
        last = {document["orderId"]: document for _, document in receiver.received}
        assert last["WB-CANCELLED"] == relay.status("WB-CANCELLED").body
        assert receiver.refused == 0

        # When the rejected invoice is corrected and sent again: it is QUEUED, then invoiced
        relay.simulator.state.configure_order("WB-CANCELLED", "confirmed")
        corrected = invoice_dict("WB-CANCELLED", invoiceNumber="SINV-WB-CANCELLED-2")
        assert relay.post(corrected).status == 202
        relay.wait_for_final(("WB-CANCELLED", "sale"))
        wait_until(in_step)
        # Then its one record follows, and its states arrived in order
        assert frappe.records["WB-CANCELLED-sale"]["status"] == "INVOICED"
        written = [write["relay_updated_at"] for write in frappe.writes["WB-CANCELLED-sale"]]
        assert written == sorted(written)
        assert [record for record in frappe.records if record.startswith("WB-CANCELLED")] == [
            "WB-CANCELLED-sale"
        ]
