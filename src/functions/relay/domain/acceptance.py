"""Accepting a verified webhook's invoices: record them in the ledger, then queue them.

The ledger write comes first and is all or nothing; the queue send comes after and must
succeed for every invoice before the sender hears 202. If the send fails the entries stay
QUEUED, the sender gets a 503 and retries, and the retry re-queues them (Action.REQUEUE).

When another request records one of the keys between our read and our write, we read once
more and decide again: most often that request is the sender's own retry (Frappe resends the
moment its 5 s timeout passes, while the first request may still be writing), so the same
invoice is a duplicate there, never a conflict. A second race in a row stays AcceptRaceError.
"""

from collections.abc import Callable, Sequence

from relay.domain.intake import Action, Admission, ConflictError, admit
from relay.domain.invoice import Invoice, InvoiceKey
from relay.domain.ledger import LedgerEntry
from relay.domain.messages import QueuedInvoice
from relay.domain.ports import AcceptRaceError, InvoiceQueue, Ledger
from relay.observability import count, logger


class InvoiceAcceptance:
    def __init__(self, *, ledger: Ledger, queue: InvoiceQueue, clock: Callable[[], float]) -> None:
        self._ledger = ledger
        self._queue = queue
        self._clock = clock

    def accept(self, invoices: Sequence[Invoice], *, correlation_id: str | None) -> list[Admission]:
        count("InvoicesReceived", len(invoices))
        recorded, admissions = self._admit(invoices)
        now = self._clock()
        try:
            self._ledger.accept(admissions, now=now, correlation_id=correlation_id)
        except AcceptRaceError:
            logger.info("an invoice key changed while accepting; deciding again")
            recorded, admissions = self._admit(invoices)
            self._ledger.accept(admissions, now=now, correlation_id=correlation_id)
        to_queue = [
            QueuedInvoice(
                invoice=admission.invoice,
                content_hash=admission.content_hash,
                accepted_at=recorded[admission.invoice.key].accepted_at
                if admission.action is Action.REQUEUE
                else now,
                correlation_id=correlation_id,
            )
            for admission in admissions
            if admission.enqueue
        ]
        self._queue.send(to_queue)
        suppressed = len(admissions) - len(to_queue)
        if suppressed:
            count("DuplicatesSuppressed", suppressed, stage="ingest")
        count("InvoicesQueued", len(to_queue))
        logger.info(
            "invoices accepted",
            extra={
                "invoice_keys": [str(admission.invoice.key) for admission in admissions],
                "queued": len(to_queue),
                "already_known": suppressed,
            },
        )
        return admissions

    def _admit(self, invoices: Sequence[Invoice]) -> tuple[dict[InvoiceKey, LedgerEntry], list[Admission]]:
        recorded = self._ledger.get_many(invoice.key for invoice in invoices)
        try:
            return recorded, admit(invoices, recorded)
        except ConflictError as conflict:
            count("Conflicts", len(conflict.conflicts))
            logger.warning(
                "invoices conflict with recorded ones",
                extra={"invoice_keys": [str(item.key) for item in conflict.conflicts]},
            )
            raise
