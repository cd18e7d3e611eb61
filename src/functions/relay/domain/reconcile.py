"""Finding unfinished invoices that stopped moving, and queueing them again.

An accepted invoice is QUEUED, RETRYING or IN_PROGRESS until Fynd's answer is recorded,
and something must always be on its way to move it: its queue message. Two faults leave
an entry with nothing behind it, and only an ERP resend would heal them:

- ingest crashed (or timed out) after the ledger transaction and before the queue send:
  the entry stays QUEUED with no message;
- the holder's message vanished (another delivery of it acknowledged elsewhere, a
  visibility change that failed): the entry stays RETRYING, or IN_PROGRESS under a lease
  nobody will renew.

The rule, with N = the stall window (ReconcileAfterMinutes):

| status      | stalled when                               |
| ---         | ---                                        |
| QUEUED      | updatedAt more than N ago                  |
| RETRYING    | retryAt (its due time) more than N ago     |
| IN_PROGRESS | leaseUntil (its lease's end) more than N ago |

and, whatever the status, no write touched the entry in the last N (the reconciler's own
mark counts: it sets updatedAt). N exceeds the queue's visibility timeout and the
dispatcher's lease, so a message still in flight or due back has had its chance first.

A stalled entry is requeued from the invoice ingest stored beside it (the body item):
first a conditional mark on the unchanged entry, which only one reconciler run wins and
which keeps it from being found again for N; then the send. A copy too many costs
nothing: the dispatcher's claim lets one copy through and drops the others. A QUEUED entry
it cannot queue (no stored invoice, the queue refused) is marked as ingest marks a failed
send, so the ERP's resend of that invoice queues it again (relay.domain.intake).

An entry whose message went to the dead-letter queue is the operator's (an alarm, a redrive)
and is not looked at for the window N. But the dead-letter queue keeps a message 14 days from
its first enqueue (DEAD_LETTER_RETENTION_SECONDS, the template's), then drops it: an entry
still marked dead-lettered that long after its mark has no message anywhere, and nothing else
would ever move it. The reconciler queues such an entry again from its stored invoice, as it
queues a stalled one; it dead-letters again if it still fails, and the alarms fire again. The
alarm `dead-letter-expiring` (docs/runbook.md) asks for the redrive well before that.
"""

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry
from relay.domain.messages import QueuedInvoice
from relay.domain.ports import InvoiceQueue
from relay.observability import count, logger

RECONCILED_STATUSES = (InvoiceStatus.QUEUED, InvoiceStatus.RETRYING, InvoiceStatus.IN_PROGRESS)
"""The unfinished states, in the order each run visits them."""

SECONDS_KEPT_IN_HAND = 5.0
"""A run stops looking for more once this little of the invocation is left."""

DEAD_LETTER_RETENTION_SECONDS = 1_209_600
"""How long the dead-letter queue keeps a message (14 days, the SQS maximum; template.yaml's
InvoiceDeadLetterQueue MessageRetentionPeriod), counted from the message's first enqueue."""


class StalledLedger(Protocol):
    """What the reconciler needs from the ledger (relay.adapters.ledger.InvoiceLedger)."""

    def stalled(self, status: InvoiceStatus, *, updated_before: float, limit: int) -> list[LedgerEntry]:
        """Entries in `status` last written before `updated_before`, oldest first, at most `limit`."""
        ...

    def mark_reconciled(self, entry: LedgerEntry, *, now: float) -> bool:
        """Stamp the entry as requeued at `now`, only if it is still as read; False when it moved."""
        ...

    def body(self, key: InvoiceKey) -> QueuedInvoice | None:
        """The message ingest queued for `key`, as stored at acceptance; None when there is none."""
        ...

    def mark_send_failed(self, key: InvoiceKey, *, now: float) -> bool:
        """As relay.domain.ports.Ledger: a resend of the invoice will queue it again."""
        ...

    def dead_lettered(self, *, marked_before: float, limit: int) -> list[LedgerEntry]:
        """Unfinished entries marked dead-lettered and last written by `marked_before`, oldest first."""
        ...


def due_at(entry: LedgerEntry) -> float:
    """When the entry should last have moved: the clock its status runs on."""
    match entry.status:
        case InvoiceStatus.RETRYING:
            return entry.retry_at if entry.retry_at is not None else entry.updated_at
        case InvoiceStatus.IN_PROGRESS:
            return entry.lease_until if entry.lease_until is not None else entry.updated_at
        case _:
            return entry.updated_at


def is_stalled(entry: LedgerEntry, *, now: float, stall_seconds: float) -> bool:
    cutoff = now - stall_seconds
    return entry.status in RECONCILED_STATUSES and entry.updated_at < cutoff and due_at(entry) < cutoff


@dataclass
class ReconcileReport:
    """What one run found; the handler returns it, so `make invoke` shows it."""

    requeued: dict[str, list[str]] = field(default_factory=dict)
    """Keys queued again, by the status they were found in."""
    failed: list[str] = field(default_factory=list)
    """Stalled keys that could not be queued again (no stored invoice, queue refused)."""
    complete: bool = True
    """False when the run stopped early (its limit or its time) with more possibly left."""

    def as_dict(self) -> dict[str, object]:
        return {"requeued": self.requeued, "failed": self.failed, "complete": self.complete}


class Reconciler:
    def __init__(
        self,
        *,
        ledger: StalledLedger,
        queue: InvoiceQueue,
        clock: Callable[[], float],
        stall_seconds: float,
        max_per_run: int,
        dead_letter_retention_seconds: float | None = DEAD_LETTER_RETENTION_SECONDS,
    ) -> None:
        self._ledger = ledger
        self._queue = queue
        self._clock = clock
        self._stall_seconds = stall_seconds
        self._max_per_run = max_per_run
        self._dead_letter_retention = dead_letter_retention_seconds
        """None: dead-lettered entries are never queued again (their messages never expire)."""

    def reconcile(self, seconds_left: Callable[[], float]) -> ReconcileReport:
        """One pass over the unfinished states. A ledger outage while listing ends the run
        (the next scheduled run retries); a failure on one entry is counted and skipped."""
        report = ReconcileReport()
        budget = self._max_per_run
        for status in RECONCILED_STATUSES:
            now = self._clock()
            found = self._ledger.stalled(status, updated_before=now - self._stall_seconds, limit=budget)
            budget -= len(found)
            for entry in found:
                if seconds_left() < SECONDS_KEPT_IN_HAND:
                    report.complete = False
                    return report
                if is_stalled(entry, now=now, stall_seconds=self._stall_seconds):
                    self._requeue(entry, now, report)
            if budget <= 0:
                report.complete = False
                return report
        if self._dead_letter_retention is not None:
            now = self._clock()
            marked_before = now - self._dead_letter_retention
            for entry in self._ledger.dead_lettered(marked_before=marked_before, limit=budget):
                if seconds_left() < SECONDS_KEPT_IN_HAND:
                    report.complete = False
                    return report
                if not entry.status.is_final and entry.updated_at <= marked_before:
                    self._requeue(entry, now, report)
        return report

    def _requeue(self, entry: LedgerEntry, now: float, report: ReconcileReport) -> None:
        key = str(entry.key)
        context = {"invoice_key": key, "status": str(entry.status), "correlation_id": entry.correlation_id}
        try:
            if not self._ledger.mark_reconciled(entry, now=now):
                return  # it moved since we read it (or another run took it): not stalled after all
            message = self._ledger.body(entry.key)
        except LedgerUnavailableError:
            self._failed(key, report, context, "ledger_unavailable")
            return
        if message is None or message.content_hash != entry.content_hash:
            # An entry accepted before bodies were stored, or a body a losing racer overwrote.
            self._unqueued(entry, now, report, context, "no_stored_invoice")
            return
        try:
            self._queue.send([message])
        except QueueUnavailableError:
            self._unqueued(entry, now, report, context, "queue_unavailable")
            return
        count("Reconciled", status=str(entry.status))
        report.requeued.setdefault(str(entry.status), []).append(key)
        logger.warning(
            "stalled invoice queued again",
            extra={**context, "stalled_for_seconds": round(now - due_at(entry)), "attempts": entry.attempts},
        )

    def _unqueued(
        self,
        entry: LedgerEntry,
        now: float,
        report: ReconcileReport,
        context: Mapping[str, object],
        reason: str,
    ) -> None:
        """Not queued again: a QUEUED entry is marked so that the ERP's resend queues it."""
        self._failed(str(entry.key), report, context, reason)
        if entry.status is InvoiceStatus.QUEUED:
            # Unmarked for a ledger outage: the next run finds it again and tries once more.
            with suppress(LedgerUnavailableError):
                self._ledger.mark_send_failed(entry.key, now=now)

    @staticmethod
    def _failed(key: str, report: ReconcileReport, context: Mapping[str, object], reason: str) -> None:
        count("ReconcileFailed")
        report.failed.append(key)
        logger.error("stalled invoice could not be queued again", extra={**context, "reason": reason})
