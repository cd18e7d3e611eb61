"""The DynamoDB ledger's enrichment write (Action.REPLACE) against moto, the table built from
template.yaml: it and a claim on the same item exclude each other, so no version is sent twice."""

from typing import Any

import pytest

from factories import invoice
from relay.adapters.ledger import InvoiceLedger
from relay.domain.errors import AcceptRaceError
from relay.domain.intake import Action, admit
from relay.domain.ledger import ClaimRefusal, InvoiceStatus
from relay.domain.messages import QueuedInvoice

TABLE = "InvoiceLedgerTable"
NOW = 1_800_000_000.0
FIRST = invoice("FY-ENR-9")
ENRICHED = invoice("FY-ENR-9", irnNumber="b" * 64, ackNumber="1826", ackDate="2026-11-20 14:32:05")


@pytest.fixture
def ledger(dynamodb: Any) -> InvoiceLedger:
    ledger = InvoiceLedger(TABLE, dynamodb)
    ledger.accept(admit([FIRST], {}), now=NOW, correlation_id="wh-1")
    return ledger


def first_message() -> QueuedInvoice:
    return QueuedInvoice(invoice=FIRST, content_hash=FIRST.content_hash(), accepted_at=NOW)


def enrichment(ledger: InvoiceLedger) -> Any:
    (admission,) = admit([ENRICHED], ledger.get_many([FIRST.key]), queued_versions={FIRST.key: FIRST})
    assert admission.action is Action.REPLACE
    return admission


def test_an_enrichment_of_a_queued_entry_replaces_it_and_its_stored_body(ledger: InvoiceLedger) -> None:
    # When the enrichment is written while the entry is QUEUED
    ledger.accept([enrichment(ledger)], now=NOW + 1, correlation_id="wh-2")
    # Then the entry and the stored body are the enriched version, still QUEUED
    entry = ledger.get(FIRST.key)
    assert entry is not None
    assert (entry.status, entry.content_hash, entry.correlation_id) == (
        InvoiceStatus.QUEUED,
        ENRICHED.content_hash(),
        "wh-2",
    )
    body = ledger.body(FIRST.key)
    assert body is not None
    assert body.invoice == ENRICHED
    # And the first version's message can no longer claim the key
    claim = ledger.claim(first_message(), message_id="m-1", owner="w-1", now=NOW + 2, lease_seconds=120)
    assert claim.refusal is ClaimRefusal.SUPERSEDED


def test_an_enrichment_decided_before_a_claim_and_written_after_it_is_refused(ledger: InvoiceLedger) -> None:
    # Given the enrichment decided on the QUEUED entry
    admission = enrichment(ledger)
    # When a dispatcher claims the first version before the enrichment is written
    assert ledger.claim(
        first_message(), message_id="m-1", owner="w-1", now=NOW + 1, lease_seconds=120
    ).granted
    # Then the write is refused as a race, and the claimed entry is unchanged
    with pytest.raises(AcceptRaceError):
        ledger.accept([admission], now=NOW + 2, correlation_id="wh-2")
    entry = ledger.get(FIRST.key)
    assert entry is not None
    assert (entry.status, entry.content_hash) == (InvoiceStatus.IN_PROGRESS, FIRST.content_hash())
    body = ledger.body(FIRST.key)
    assert body is not None
    assert body.invoice == FIRST
