"""Accepting a verified webhook's invoices: record them in the ledger, then queue them.

The ledger write comes first and is all or nothing; the queue send comes after and must
succeed for every invoice before the sender hears 202. If the send fails the entries stay
QUEUED, the sender gets a 503 and retries, and the retry re-queues them (Action.REQUEUE).
"""

from collections.abc import Callable, Sequence

from relay.domain.intake import Action, Admission, ConflictError, admit
from relay.domain.invoice import Invoice
from relay.domain.messages import QueuedInvoice
from relay.domain.ports import InvoiceQueue, Ledger
from relay.observability import count, logger


class InvoiceAcceptance:
    def __init__(self, *, ledger: Ledger, queue: InvoiceQueue, clock: Callable[[], float]) -> None:
        self._ledger = ledger
        self._queue = queue
        self._clock = clock

    def accept(self, invoices: Sequence[Invoice], *, correlation_id: str | None) -> list[Admission]:
        count("InvoicesReceived", len(invoices))
        recorded = self._ledger.get_many(invoice.key for invoice in invoices)
        try:
            admissions = admit(invoices, recorded)
        except ConflictError as conflict:
            count("Conflicts", len(conflict.conflicts))
            logger.warning(
                "invoices conflict with recorded ones",
                extra={"invoice_keys": [str(item.key) for item in conflict.conflicts]},
            )
            raise
        now = self._clock()
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
