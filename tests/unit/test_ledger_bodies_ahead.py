"""Issue 18, open question 1: bodies written ahead of the transaction (webhooks of more than 50
new invoices) by a racer that then loses. Against the DynamoDB adapter on in-process moto (the
table built from template.yaml), through the real acceptance and the real reconciler."""

from typing import Any

import pytest

from factories import invoice
from fakes import FakeClock, FakeQueueAge, RecordingQueue
from ingest_harness import StaleFirstRead
from relay.adapters.ledger import TRANSACTION_LIMIT, InvoiceLedger
from relay.domain.errors import ConflictError
from relay.domain.intake import InvoiceAcceptance
from relay.domain.invoice import Invoice, InvoiceKey
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import QueuedInvoice
from relay.domain.reconcile import Reconciler

TABLE = "InvoiceLedgerTable"
NOW = 1_800_000_000.0
STALL = 900.0
SIZE = 60
"""Invoices per webhook: above 50, so the adapter writes their bodies ahead of the transaction."""


def webhook(prefix: str, shared: Invoice) -> list[Invoice]:
    return [shared, *(invoice(f"{prefix}-{index}") for index in range(SIZE - 1))]


def acceptance(ledger: Any, queue: RecordingQueue) -> InvoiceAcceptance:
    # As relay.wiring builds it: webhooks above 50 invoices are read before they are written
    return InvoiceAcceptance(
        ledger=ledger, queue=queue, clock=FakeClock(NOW), optimistic_limit=TRANSACTION_LIMIT // 2
    )


def test_a_racer_refused_409_leaves_the_winners_body_for_the_reconciler(dynamodb: Any) -> None:
    ledger = InvoiceLedger(TABLE, dynamodb)
    winner_queue, loser_queue = RecordingQueue(FakeClock(NOW)), RecordingQueue(FakeClock(NOW))
    shared = invoice("SHARED-1")
    other = invoice("SHARED-1", invoiceNumber="INV-OTHER")
    # Given a loser that read the ledger before the winner wrote it (StaleFirstRead: its first read sees nothing)
    loser = acceptance(StaleFirstRead(ledger), loser_queue)
    # When the winner accepts 60 invoices holding the shared key, and the loser then writes its 60
    # (bodies ahead, then a transaction that fails) and, reading again, is answered 409
    acceptance(ledger, winner_queue).accept(webhook("W", shared), correlation_id="wh-winner")
    with pytest.raises(ConflictError):
        loser.accept(webhook("L", other), correlation_id="wh-loser")
    # And the winner's messages are lost (e.g. acknowledged by a worker that then died)
    winner_queue.messages.clear()
    # Then, once stalled, the reconciler queues the winner's own content for the shared key
    later = FakeClock(NOW + STALL + 1)
    healed = RecordingQueue(later)
    queue_age = FakeQueueAge(healed, later)
    queue_age.known = False  # the window alone decides
    report = Reconciler(
        ledger=ledger, queue=healed, queue_age=queue_age, clock=later, stall_seconds=STALL
    ).reconcile(lambda: 60.0)
    assert report.failed == []
    queued = {message.invoice.key: message for message in map(QueuedInvoice.from_body, bodies(healed))}
    assert len(queued) == SIZE
    assert queued[shared.key].invoice == shared
    assert queued[shared.key].content_hash == shared.content_hash()
    # And nothing of the loser was recorded
    entry = ledger.get(shared.key)
    assert entry is not None
    assert (entry.status, entry.content_hash) == (InvoiceStatus.QUEUED, shared.content_hash())
    assert ledger.get(InvoiceKey.parse("L-0#sale")) is None


def bodies(queue: RecordingQueue) -> list[str]:
    return [held.body for held in queue.messages.values()]
