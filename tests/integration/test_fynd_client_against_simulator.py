"""The relay's Fynd client against the simulator over real HTTP on 127.0.0.1: Get Shipment
Info and what it proves, 2xx answers that confirm nothing, the whole-call 413, and every
new knob driven through the control API as `make chaos` would."""

from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from factories import invoice
from fynd_simulator import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    SHIPMENT_INFO_PATH,
    UNCONFIRMED_SHAPES,
    FyndSimulator,
    SimulatorControl,
)
from relay.adapters.fynd import Credentials, FyndClient
from relay.domain.fynd import (
    FyndAmbiguous,
    FyndCall,
    FyndCallRefused,
    FyndThrottled,
    FyndUnavailable,
    encode_invoices,
    plan_calls,
)
from relay.domain.invoice import InvoiceType
from relay.domain.shipment import ShipmentState, classify_shipment

BUDGET = 10.0


class SimulatorCredentials:
    def for_location(self, location_code: str | None) -> Credentials:
        return Credentials(DEFAULT_USERNAME, DEFAULT_PASSWORD)


@pytest.fixture
def simulator() -> Iterator[FyndSimulator]:
    with FyndSimulator() as running:
        yield running


@pytest.fixture
def control(simulator: FyndSimulator) -> SimulatorControl:
    return SimulatorControl(simulator.url)


@pytest.fixture
def fynd(simulator: FyndSimulator) -> Iterator[FyndClient]:
    pool = urllib3.PoolManager(maxsize=2)
    yield FyndClient(
        simulator.url, SimulatorCredentials(), http=pool, timeout=urllib3.Timeout(connect=2, read=5)
    )
    pool.clear()


def call(*order_ids: str, invoice_type: str = "sale") -> FyndCall:
    return FyndCall(
        None, InvoiceType(invoice_type), tuple(invoice(o, invoiceType=invoice_type) for o in order_ids)
    )


def state_of(fynd: FyndClient, order_id: str, invoice_type: InvoiceType = InvoiceType.SALE) -> ShipmentState:
    return classify_shipment(fynd.shipment_info(order_id, None, time_budget_seconds=BUDGET), invoice_type)


def test_shipment_info_proves_each_state_over_http(fynd: FyndClient, control: SimulatorControl) -> None:
    # Given orders in each state Fynd can hold
    control.configure_orders({"LATE-1": {"confirm_after_attempts": 5}, "RET-1": {"kind": "return"}})
    # When the relay reads them / Then each proves what the classification says
    assert state_of(fynd, "ORD-1") is ShipmentState.READY
    assert state_of(fynd, "INVOICED-1") is ShipmentState.INVOICED
    assert state_of(fynd, "CANCELLED-1") is ShipmentState.CANCELLED
    assert state_of(fynd, "LATE-1") is ShipmentState.NOT_INVOICED
    assert state_of(fynd, "UNKNOWN-1") is ShipmentState.UNKNOWN
    assert state_of(fynd, "RET-1", InvoiceType.RETURN) is ShipmentState.READY
    # And after an invoice and a credit note, Shipment Info proves both
    fynd.update_invoices(call("ORD-1"), time_budget_seconds=BUDGET)
    fynd.update_invoices(call("RET-1", invoice_type="return"), time_budget_seconds=BUDGET)
    assert state_of(fynd, "ORD-1") is ShipmentState.INVOICED
    assert state_of(fynd, "RET-1", InvoiceType.RETURN) is ShipmentState.INVOICED
    assert control.stats().shipment_reads == 8


def test_a_dropped_answer_then_shipment_info_proves_the_invoice(
    fynd: FyndClient, control: SimulatorControl
) -> None:
    # Given Fynd applies the call and drops the answer
    control.add_faults({"kind": "commit_then_drop"})
    with pytest.raises(FyndAmbiguous):
        fynd.update_invoices(call("ORD-1"), time_budget_seconds=BUDGET)
    # When the relay checks before sending again / Then it has proof, and no second send is needed
    assert state_of(fynd, "ORD-1") is ShipmentState.INVOICED
    assert control.invoice_count("ORD-1") == 1
    assert control.stats().duplicates == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "status", "status": 503, "endpoint": "shipment"}, FyndUnavailable),
        ({"kind": "status", "status": 429, "retry_after": 3, "endpoint": "shipment"}, FyndThrottled),
        ({"kind": "commit_then_drop", "endpoint": "shipment"}, FyndUnavailable),
    ],
)
def test_shipment_info_faults_reach_the_client_typed(
    fynd: FyndClient, control: SimulatorControl, fault: dict[str, Any], error: type[Exception]
) -> None:
    control.add_faults(fault)
    with pytest.raises(error):
        fynd.shipment_info("ORD-1", None, time_budget_seconds=BUDGET)


def test_a_latency_beyond_the_budget_is_unavailable_for_a_read(
    fynd: FyndClient, control: SimulatorControl
) -> None:
    fynd.shipment_info("ORD-1", None, time_budget_seconds=BUDGET)  # a token in hand
    control.add_faults({"kind": "latency", "seconds": 3, "endpoint": "shipment"})
    with pytest.raises(FyndUnavailable):
        fynd.shipment_info("ORD-1", None, time_budget_seconds=1)


def test_a_novel_status_proves_nothing(fynd: FyndClient, control: SimulatorControl) -> None:
    # Given an invoiced order whose next read carries a status value never used before
    fynd.update_invoices(call("ORD-1"), time_budget_seconds=BUDGET)
    for field in ("both", "orderStatus", "shipmentStatus"):
        control.add_faults({"kind": "novel_status", "field": field})
        # When it is read / Then it proves nothing: the relay falls back to what it did before
        assert state_of(fynd, "ORD-1") is ShipmentState.UNKNOWN


@pytest.mark.parametrize("shape", UNCONFIRMED_SHAPES)
def test_an_unconfirmed_2xx_is_ambiguous_for_the_client(
    fynd: FyndClient, control: SimulatorControl, shape: str
) -> None:
    # Given Fynd applies the call but answers a 200 that confirms nothing
    control.add_faults({"kind": "unconfirmed", "shape": shape})
    # When the relay sends it
    with pytest.raises(FyndAmbiguous) as doubt:
        fynd.update_invoices(call("ORD-1", "ORD-2"), time_budget_seconds=BUDGET)
    # Then no order is taken as invoiced, though the simulator applied both
    assert doubt.value.error_for("ORD-1") is None
    assert doubt.value.error_for("ORD-2") is None
    assert control.invoice_count("ORD-1") == 1


def test_a_body_over_the_limit_is_refused_whole_and_the_planned_calls_fit(
    fynd: FyndClient, control: SimulatorControl
) -> None:
    # Given the simulator refuses bodies above 2 KiB, and five invoices of about 1 KiB
    assert control.configure(max_body_bytes=2048)["max_body_bytes"] == 2048
    invoices = [invoice(f"BIG-{n}", signedInvoice="s" * 1000) for n in range(5)]
    # When they go as one call / Then Fynd refuses it whole with 413, and nothing is applied
    with pytest.raises(FyndCallRefused) as refused:
        fynd.update_invoices(FyndCall(None, InvoiceType.SALE, tuple(invoices)), time_budget_seconds=BUDGET)
    assert refused.value.status == 413
    assert "2048" in refused.value.detail
    assert control.stats().invoiced == 0
    # When they are planned under the same cap / Then every call is answered
    for planned in plan_calls(invoices, max_bytes=2048):
        assert len(encode_invoices(planned.invoices)) <= 2048
        assert fynd.update_invoices(planned, time_budget_seconds=BUDGET).errors == {}
    assert control.stats().invoiced == 5


def test_fault_rates_are_set_and_shown_through_the_control_api(
    control: SimulatorControl, simulator: FyndSimulator
) -> None:
    rates = [{"rate": 1, "fault": {"kind": "status", "status": 503, "endpoint": "shipment"}}]
    shown = control.configure(fault_rates=rates, seed=11)
    assert shown["seed"] == 11
    assert shown["fault_rates"] == [
        {"rate": 1.0, "fault": {"kind": "status", "endpoint": "shipment", "status": 503}}
    ]
    http = urllib3.PoolManager(retries=False)
    assert http.request("GET", simulator.url + SHIPMENT_INFO_PATH, fields={"orderId": "A"}).status == 503
    control.configure(fault_rates=[])
    assert http.request("GET", simulator.url + SHIPMENT_INFO_PATH, fields={"orderId": "A"}).status == 401
