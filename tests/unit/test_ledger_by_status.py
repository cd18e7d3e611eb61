"""InvoiceLedger.entries_in, the one Query of the sparse ByStatus index, against in-process moto
(the table and its index built from template.yaml): what `relay list`, `stats`, `report` and
`replay --status` read, and what the reconciler's `stalled` reads through it."""

from typing import Any

import pytest
from botocore.exceptions import ClientError

from factories import invoice
from relay.adapters.ledger import InvoiceLedger
from relay.domain.errors import LedgerUnavailableError
from relay.domain.intake import admit
from relay.domain.ledger import InvoiceStatus, LastError
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Invoiced, Rejected, Verdict

TABLE = "InvoiceLedgerTable"
NOW = 1_800_000_000.0
MINUTE = 60.0


@pytest.fixture
def ledger(dynamodb: Any) -> InvoiceLedger:
    return InvoiceLedger(TABLE, dynamodb)


@pytest.fixture
def operations(dynamodb: Any) -> list[str]:
    """The name of every DynamoDB operation called from here on."""
    called: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb", lambda event_name, **_: called.append(event_name))
    return called


def accepted(ledger: InvoiceLedger, order_id: str, *, at: float) -> QueuedInvoice:
    document = invoice(order_id)
    (admission,) = admit([document], {})
    ledger.accept([admission], now=at, correlation_id="wh-1")
    return QueuedInvoice(invoice=document, content_hash=admission.content_hash, accepted_at=at)


def settled(ledger: InvoiceLedger, order_id: str, verdict: Verdict, *, at: float) -> None:
    message = accepted(ledger, order_id, at=at)
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=at, lease_seconds=120).granted
    assert ledger.record(message.invoice.key, verdict, owner="w-1", now=at, ack_id=None)


def test_entries_in_reads_one_status_in_a_window_newest_first_with_queries_only(
    ledger: InvoiceLedger, operations: list[str]
) -> None:
    # Given QUEUED entries written 40, 30, 20 and 10 minutes ago, a REJECTED and an INVOICED one
    for age in (40, 30, 20, 10):
        accepted(ledger, f"Q-{age}", at=NOW - age * MINUTE)
    settled(ledger, "REJ-1", Rejected("IN401", "cancelled"), at=NOW - 25 * MINUTE)
    settled(ledger, "INV-1", Invoiced(), at=NOW - 25 * MINUTE)
    operations.clear()
    # When the QUEUED ones written from 30 to 20 minutes ago (both ends included) are asked for
    found = ledger.entries_in(
        InvoiceStatus.QUEUED,
        updated_since=NOW - 30 * MINUTE,
        updated_until=NOW - 20 * MINUTE,
        newest_first=True,
    )
    # Then exactly those two come back, newest first, read by Query alone (never a Scan)
    assert [entry.key.order_id for entry in found] == ["Q-20", "Q-30"]
    assert {entry.status for entry in found} == {InvoiceStatus.QUEUED}
    assert set(operations) == {"before-call.dynamodb.Query"}
    # And without a window, every QUEUED entry comes back, oldest first
    assert [e.key.order_id for e in ledger.entries_in(InvoiceStatus.QUEUED)] == [
        "Q-40",
        "Q-30",
        "Q-20",
        "Q-10",
    ]


def test_entries_in_filters_by_the_last_error_code_and_maps_the_whole_entry(ledger: InvoiceLedger) -> None:
    # Given two entries Fynd rejected with different codes
    settled(ledger, "CANCELLED-1", Rejected("IN401", "Order already cancelled"), at=NOW - 2 * MINUTE)
    settled(ledger, "UNKNOWN-1", Rejected("IN400", "Order not found"), at=NOW - MINUTE)
    # When only IN401 is asked for
    (entry,) = ledger.entries_in(InvoiceStatus.REJECTED, error_code="IN401")
    # Then it is that entry, as the adapter reads any entry (the same mapping as `get`)
    assert entry.key.order_id == "CANCELLED-1"
    assert entry.last_error == LastError("IN401", "Order already cancelled")
    assert entry == ledger.get(entry.key)


def test_entries_in_pages_through_the_index_up_to_its_limit(
    ledger: InvoiceLedger, dynamodb: Any, operations: list[str]
) -> None:
    # Given seven QUEUED entries, read back one item per page
    for index in range(7):
        accepted(ledger, f"FY-{index}", at=NOW - (60 - index) * MINUTE)
    dynamodb.meta.events.register("provide-client-params.dynamodb.Query", _one_item_per_page)
    operations.clear()
    # When at most five are asked for, newest first
    found = ledger.entries_in(InvoiceStatus.QUEUED, newest_first=True, limit=5)
    # Then the five newest come back in order, one page each, and no page is read past the limit
    assert [entry.key.order_id for entry in found] == [f"FY-{index}" for index in (6, 5, 4, 3, 2)]
    assert operations == ["before-call.dynamodb.Query"] * 5
    # And without a limit all seven come back
    assert len(ledger.entries_in(InvoiceStatus.QUEUED)) == 7
    # And a limit of zero reads nothing
    assert ledger.entries_in(InvoiceStatus.QUEUED, limit=0) == []


def _one_item_per_page(params: dict[str, Any], **_: object) -> None:
    params["Limit"] = 1


def test_entries_in_has_no_invoiced_entries_the_index_is_sparse(ledger: InvoiceLedger) -> None:
    # Given an invoiced entry (INVOICED removes statusKey)
    settled(ledger, "FY-1", Invoiced(), at=NOW)
    # When INVOICED entries are asked for, Then none come back
    assert ledger.entries_in(InvoiceStatus.INVOICED) == []


def test_entries_in_leaves_an_outage_on_a_later_page_as_ledger_unavailable(
    ledger: InvoiceLedger, dynamodb: Any
) -> None:
    # Given three QUEUED entries, read one per page, and DynamoDB throttling from the second page on
    for index in range(3):
        accepted(ledger, f"FY-{index}", at=NOW - index)
    dynamodb.meta.events.register("provide-client-params.dynamodb.Query", _one_item_per_page)
    dynamodb.meta.events.register_first("before-send.dynamodb", _throttled_after(1))
    # When they are listed, Then the caller sees the domain's error, not botocore's
    with pytest.raises(LedgerUnavailableError):
        ledger.entries_in(InvoiceStatus.QUEUED)


def _throttled_after(answered: int) -> Any:
    """A before-send hook: the first `answered` requests reach moto, every later one is throttled."""
    sent = iter(range(answered))

    def send(**_: object) -> None:
        if next(sent, None) is None:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Query")

    return send
