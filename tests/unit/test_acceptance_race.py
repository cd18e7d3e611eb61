"""A key recorded by another request between ingest's read and its write (the sender's own retry
racing its first attempt, as Frappe's does after its 5 s timeout): decided again, not refused."""

from collections.abc import Iterable, Sequence

import pytest

from factories import invoice
from relay.domain.acceptance import InvoiceAcceptance
from relay.domain.intake import Action, Admission, ConflictError
from relay.domain.invoice import Invoice, InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry
from relay.domain.messages import QueuedInvoice
from relay.domain.ports import AcceptRaceError


class RacedLedger:
    """Holds entries in memory; before each write, the next racer (if any) records its invoice first."""

    def __init__(self, *racers: Invoice) -> None:
        self.entries: dict[InvoiceKey, LedgerEntry] = {}
        self._racers = list(racers)

    def get_many(self, keys: Iterable[InvoiceKey]) -> dict[InvoiceKey, LedgerEntry]:
        return {key: self.entries[key] for key in keys if key in self.entries}

    def accept(self, admissions: Sequence[Admission], *, now: float, correlation_id: str | None) -> None:
        writes = [a for a in admissions if a.action in (Action.CREATE, Action.RESUBMIT)]
        if self._racers:
            racer = self._racers.pop(0)
            self.entries[racer.key] = _entry(racer, now)
            if any(a.invoice.key == racer.key for a in writes):
                raise AcceptRaceError("an invoice key changed while this request was being accepted")
        for admission in writes:
            self.entries[admission.invoice.key] = _entry(admission.invoice, now)


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[QueuedInvoice] = []

    def send(self, messages: Sequence[QueuedInvoice]) -> None:
        self.sent.extend(messages)


def _entry(recorded: Invoice, now: float) -> LedgerEntry:
    return LedgerEntry(
        key=recorded.key,
        status=InvoiceStatus.QUEUED,
        content_hash=recorded.content_hash(),
        invoice_number=recorded.invoiceNumber,
        attempts=0,
        accepted_at=now,
        updated_at=now,
    )


def acceptance(ledger: RacedLedger, queue: RecordingQueue) -> InvoiceAcceptance:
    return InvoiceAcceptance(ledger=ledger, queue=queue, clock=lambda: 1_000.0)  # type: ignore[arg-type]


def test_the_same_invoice_recorded_meanwhile_is_a_duplicate_not_a_conflict() -> None:
    # Given the sender's retry records the very same invoice while this request is writing
    sent = invoice("FY-1")
    ledger, queue = RacedLedger(sent), RecordingQueue()
    # When this request is accepted
    admissions = acceptance(ledger, queue).accept([sent], correlation_id=None)
    # Then it is a duplicate of what the retry recorded: accepted, QUEUED, re-queued once
    assert [(a.action, a.status) for a in admissions] == [(Action.REQUEUE, InvoiceStatus.QUEUED)]
    assert [message.invoice for message in queue.sent] == [sent]


def test_a_different_invoice_recorded_meanwhile_is_a_conflict() -> None:
    # Given another invoice for the same key is recorded while this request is writing
    ledger, queue = RacedLedger(invoice("FY-1", invoiceNumber="INV-OTHER")), RecordingQueue()
    # When this request is accepted, Then it is a conflict and nothing is queued
    with pytest.raises(ConflictError):
        acceptance(ledger, queue).accept([invoice("FY-1")], correlation_id=None)
    assert queue.sent == []


def test_a_second_race_in_a_row_is_still_refused_for_a_retry() -> None:
    # Given two keys, each recorded by another request just before each of this request's writes
    first, second = invoice("FY-1"), invoice("FY-2")
    ledger = RacedLedger(first, second)
    # When this request is accepted, Then it gives up after deciding once more (the sender retries)
    with pytest.raises(AcceptRaceError):
        acceptance(ledger, RecordingQueue()).accept([first, second], correlation_id=None)
