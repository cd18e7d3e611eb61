"""The ERPNext adapter over real HTTP against the ERPNext simulator (src/tools/erpnext_simulator),
which enforces the shipped DocType (docs/erpnext/fynd_invoice_sync.json) as a site would: its
autoname, its Link to the Sales Invoice, its Select options."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from erpnext_simulator import DocTypeMeta, ErpnextSimulator, Fault
from relay.adapters.erpnext import ErpNextSync
from relay.domain.errors import OutcomeRefused, TargetDown
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus, LastError, LedgerEntry
from relay.domain.writeback import DEAD_LETTERED, outcome_of

DOCTYPE_JSON = Path(__file__).resolve().parents[2] / "docs" / "erpnext" / "fynd_invoice_sync.json"


@pytest.fixture
def site() -> Iterator[ErpnextSimulator]:
    doctype = DocTypeMeta.from_doctype_json(json.loads(DOCTYPE_JSON.read_text()))
    with ErpnextSimulator(doctypes=[doctype]) as simulator:
        simulator.site.validate_links = False  # the invoice's own links (its customer) are not ours
        simulator.site.insert("Sales Invoice", {"customer": "C", "docstatus": 1})
        simulator.site.validate_links = True
        yield simulator


def target(site: ErpnextSimulator, token: str | None = None) -> ErpNextSync:
    return ErpNextSync(
        site.url,
        lambda: token or f"{site.api_key}:{site.api_secret}",
        timeout=urllib3.Timeout(connect=1, read=2),
    )


def sales_invoice(site: ErpnextSimulator) -> str:
    """The name the site gave the one Sales Invoice (its naming series)."""
    return str(site.site.documents("Sales Invoice")[0]["name"])


def entry(status: InvoiceStatus, at: float, number: str, **fields: object) -> LedgerEntry:
    return LedgerEntry(
        key=InvoiceKey("FY-1", InvoiceType.SALE),
        status=status,
        content_hash="h",
        invoice_number=number,
        attempts=1,
        accepted_at=at,
        updated_at=at,
        **fields,  # type: ignore[arg-type]
    )


def records(site: ErpnextSimulator) -> list[dict[str, object]]:
    return site.site.documents("Fynd Invoice Sync")


def test_one_record_per_key_follows_the_ledger_and_never_goes_back(site: ErpnextSimulator) -> None:
    erp = target(site)
    # Given the invoice dead-lettered, then invoiced
    erp.deliver(outcome_of(entry(InvoiceStatus.RETRYING, 10.0, sales_invoice(site), dead_lettered_at=10.0)))
    erp.deliver(outcome_of(entry(InvoiceStatus.INVOICED, 20.0, sales_invoice(site))))
    # When the dead-lettered state arrives again, late
    erp.deliver(outcome_of(entry(InvoiceStatus.RETRYING, 10.0, sales_invoice(site), dead_lettered_at=10.0)))
    # Then the site holds one record, named by the key, linked to the invoice, INVOICED
    (record,) = records(site)
    assert (record["name"], record["sales_invoice"], record["status"]) == (
        "FY-1-sale",
        sales_invoice(site),
        "INVOICED",
    )
    assert record["relay_updated_at"] == "1970-01-01T00:00:20.000Z"


def test_every_status_the_relay_writes_is_one_of_the_doctypes_options(site: ErpnextSimulator) -> None:
    erp = target(site)
    for at, status in enumerate([*InvoiceStatus, DEAD_LETTERED], start=1):
        fields = {"dead_lettered_at": float(at)} if status == DEAD_LETTERED else {}
        ledger_status = InvoiceStatus.RETRYING if status == DEAD_LETTERED else InvoiceStatus(status)
        erp.deliver(
            outcome_of(
                entry(ledger_status, float(at), sales_invoice(site), last_error=LastError("X", "y"), **fields)
            )
        )
        assert records(site)[0]["status"] == status


def test_a_link_to_a_missing_sales_invoice_is_refused(site: ErpnextSimulator) -> None:
    with pytest.raises(OutcomeRefused, match="417"):
        target(site).deliver(outcome_of(entry(InvoiceStatus.INVOICED, 1.0, "SINV-MISSING")))
    assert records(site) == []


def test_a_site_that_is_down_or_refuses_the_key_is_down(site: ErpnextSimulator) -> None:
    with pytest.raises(TargetDown, match=r"401|403"):
        target(site, "relay-key:wrong").deliver(
            outcome_of(entry(InvoiceStatus.INVOICED, 1.0, sales_invoice(site)))
        )
    site.faults.add(Fault(kind="status", status=503, count=1))
    with pytest.raises(TargetDown, match="503"):
        target(site).deliver(outcome_of(entry(InvoiceStatus.INVOICED, 1.0, sales_invoice(site))))
    # And once it is back, the same outcome is written
    target(site).deliver(outcome_of(entry(InvoiceStatus.INVOICED, 1.0, sales_invoice(site))))
    assert records(site)[0]["status"] == "INVOICED"
