"""Queueing again what lost its message, and what was parked until it is due.

An accepted invoice is QUEUED, RETRYING or IN_PROGRESS until Fynd's answer is recorded, and
something must always be on its way to move it: its queue message, or, for a long wait, the
ledger's own due time (parked: relay.domain.ledger.PARK_AFTER_SECONDS). Two faults leave an
entry with nothing behind it, and only an ERP resend would heal them:

- ingest crashed (or timed out) after the ledger transaction and before the queue send:
  the entry stays QUEUED with no message;
- the holder's message vanished (another delivery of it acknowledged elsewhere, a
  visibility change that failed): the entry stays RETRYING, or IN_PROGRESS under a lease
  nobody will renew.

Each run visits the work index's lists (relay.domain.ledger.WorkList), each with its own
budget, in this order, and queues again, with N = the stall window (ReconcileAfterMinutes) and
W = the queue's watermark (below):

| list        | queued again when                                           | counted as |
| ---         | ---                                                         | ---        |
| IN_PROGRESS | its lease ended before both N ago and W                     | lost       |
| RETRYING    | its retryAt passed before both N ago and W                  | lost       |
| QUEUED      | it was queued before both N ago and W                       | lost       |
| PARKED      | its retryAt has come                                        | returned   |

and, for the lost ones, no write touched the entry since that same moment (the reconciler's own
mark counts: it sets updatedAt) and no dispatcher's send stamp covers it past it (`last_moved`).
N exceeds the queue's visibility timeout and the dispatcher's lease, so a message still in
flight or due back has had its chance first.

The backlog rule: in a healthy backlog every unfinished entry's message is still on the queue,
however long ago it was due; what tells a backlog from a loss is the queue's own age. SQS's
ApproximateAgeOfOldestMessage is the age of the oldest message on the queue that was received
fewer than three times, counted from its send (a message received three times or more is moved
to the back of the queue and no longer counted: AWS, "Available CloudWatch metrics for Amazon
SQS"). So W, the send time of that message less QUEUE_AGE_MARGIN_SECONDS, says two things:
- a message received fewer than three times is still on the queue only if it was sent no
  earlier than that oldest message. Every message that carries an entry was sent before the
  entry's latest write, or at most one invocation after it (ingest, a dispatcher's fresh copy
  and this reconciler write the ledger, then send); a fresh copy a dispatcher queues before any
  claim (a deferral for time or a Fynd rate slot, which writes nothing else) is sent after the
  entry's send stamp, which moves its due time in the work index past every copy sent under
  it (relay.domain.ports.Ledger.stamp_sent): an entry neither written nor due since W has no
  such message left;
- a message received three times or more went to the back of the queue when it became visible
  again, at its entry's due time (retryAt): the queue has since moved past everything sent
  before W, so a message that went to the back before W has had its turn. (An IN_PROGRESS
  entry's message comes back at the visibility timeout, some minutes after the lease's end; a
  third receive of it could be copied while it waits: one copy too many, which the claim drops.)
An entry due and unwritten since before W has therefore no message on the queue, whether or not
a backlog waits in front of it; and an entry due after W may be waiting behind a backlog, however
long, and is left alone until the queue passes it. A lost message is healed once the queue's
oldest message is younger than its entry (the backlog ahead of it drained, which for a message
lost near the head of a backlog is minutes), and at least N after it was due. When the age is
unknown (CloudWatch unreachable, no datapoint), the window alone decides, as if there were no
backlog: a copy too many, never an invoice lost.

Only lost entries are counted `Reconciled` (the alarm's metric): a parked entry coming due is
the design working (`ParkedReturned`).

A queued-again entry is sent from the invoice ingest stored beside it (the body item): first a
conditional mark on the unchanged entry, which only one run wins and which makes it due again
only after N (a parked entry moves to RETRYING, due now), then the send, 10 messages per
SendMessageBatch. A run that dies between the two leaves the entry due in N: found again. A copy
too many costs nothing: the dispatcher's claim lets one copy through and drops the others. A
QUEUED entry it cannot queue (no stored invoice, the queue refused) is marked as ingest marks a
failed send, so the ERP's resend of that invoice queues it again (relay.domain.intake).

An entry whose message went to the dead-letter queue is the operator's (an alarm, a redrive):
the DEAD_LETTERED list is due at the mark's time. But the dead-letter queue keeps a message 14
days from its first enqueue (DEAD_LETTER_RETENTION_SECONDS, the template's), then drops it: an
entry still marked that long after its mark has no message anywhere, and nothing else would
ever move it. So a run also visits DEAD_LETTERED, due by the retention ago, and queues such an
entry again from its stored invoice, counted as lost (`Reconciled`); the mark makes it due again
only after another retention. It dead-letters again if it still fails, and the alarms fire
again; the alarm `dead-letter-expiring` (docs/runbook.md) asks for the redrive well before.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry, WorkList
from relay.domain.messages import QueuedInvoice
from relay.domain.ports import InvoiceQueue
from relay.observability import count, logger

RECONCILED_STATUSES = (InvoiceStatus.QUEUED, InvoiceStatus.RETRYING, InvoiceStatus.IN_PROGRESS)
"""The unfinished states."""

VISITS = (WorkList.IN_PROGRESS, WorkList.RETRYING, WorkList.QUEUED, WorkList.PARKED, WorkList.DEAD_LETTERED)
"""The lists a run visits, in order: the rare lost ones first, the many parked ones, then the
dead-lettered ones whose message the dead-letter queue must have dropped."""

SECONDS_KEPT_IN_HAND = 10.0
"""A run starts no page and no wave once this little of the invocation is left: a wave of
WAVE marks, reads and sends fits in it even when AWS makes botocore retry."""

QUEUE_AGE_MARGIN_SECONDS = 60.0
"""Kept between the oldest message's send time and an entry called lost: a message is sent at
most one invocation after its entry's write (the dispatcher's and this function's timeout, 60 s;
ingest's is 10 s), and the age is approximate."""

WAVE = 100
"""Entries marked, read and sent per wave (the sends go 10 per SendMessageBatch)."""

DEAD_LETTER_RETENTION_SECONDS = 1_209_600
"""How long the dead-letter queue keeps a message (14 days, the SQS maximum; template.yaml's
InvoiceDeadLetterQueue MessageRetentionPeriod), counted from the message's first enqueue."""


class WorkLedger(Protocol):
    """What the reconciler needs from the ledger (relay.adapters.ledger.InvoiceLedger)."""

    def due(
        self, work: WorkList, *, due_by: float, limit: int, out_of_time: Callable[[], bool]
    ) -> tuple[list[LedgerEntry], bool]:
        """Entries of `work` due by `due_by`, at most `limit`, earliest first within each shard
        of the index; and whether more may be left. Reads no further page once `out_of_time()`."""
        ...

    def mark_reconciled(self, entry: LedgerEntry, *, now: float) -> bool:
        """Stamp the entry as queued again at `now`, only if it is still as read; False when it moved."""
        ...

    def body(self, key: InvoiceKey) -> QueuedInvoice | None:
        """The message ingest queued for `key`, as stored at acceptance; None when there is none."""
        ...

    def mark_send_failed(self, key: InvoiceKey, *, now: float) -> bool:
        """As relay.domain.ports.Ledger: a resend of the invoice will queue it again."""
        ...


class QueueAge(Protocol):
    """How far back the invoice queue reaches (relay.adapters.queue_age)."""

    def oldest_sent_at(self) -> float | None:
        """A time before which no message still on the queue, of those received fewer than three
        times, was sent (from the age of its oldest message, as SQS counts it); None when unknown."""
        ...


@dataclass(frozen=True)
class Budgets:
    """Entries each list may queue again per run: one list's backlog never starves another."""

    lost: int = 500
    """Each of IN_PROGRESS, RETRYING, QUEUED and DEAD_LETTERED."""
    parked: int = 10_000
    """PARKED: every long wait of a sale day comes due here (12% IN403 of 300/s: about 36/s)."""

    def of(self, work: WorkList) -> int:
        return self.parked if work is WorkList.PARKED else self.lost


def due_at(entry: LedgerEntry) -> float:
    """When the entry should last have moved: the clock its status runs on."""
    match entry.status:
        case InvoiceStatus.RETRYING:
            return entry.retry_at if entry.retry_at is not None else entry.updated_at
        case InvoiceStatus.IN_PROGRESS:
            return entry.lease_until if entry.lease_until is not None else entry.updated_at
        case _:
            return entry.updated_at


def lost_before(*, now: float, stall_seconds: float, oldest_sent_at: float | None) -> float:
    """The moment before which an unfinished entry's message, if it had one, would have moved it:
    the window ago, or the queue's watermark when that is earlier (see the module's backlog rule)."""
    cutoff = now - stall_seconds
    if oldest_sent_at is not None:
        cutoff = min(cutoff, oldest_sent_at - QUEUE_AGE_MARGIN_SECONDS)
    return cutoff


def last_moved(entry: LedgerEntry) -> float:
    """The latest moment the entry says a message may have been sent for it (less one
    invocation): its last write, when it was due by its status, and its due time in the work
    index, which a dispatcher's send stamp moves past every fresh copy it queues before a claim
    (relay.domain.ports.Ledger.stamp_sent)."""
    listed = entry.due_at if entry.due_at is not None else entry.updated_at
    return max(entry.updated_at, due_at(entry), listed)


def is_stalled(
    entry: LedgerEntry, *, now: float, stall_seconds: float, oldest_sent_at: float | None = None
) -> bool:
    """Lost: unfinished, not parked, and neither due, written nor stamped since `lost_before`:
    the window ago, and before the oldest message still on the queue was sent, when that is known."""
    cutoff = lost_before(now=now, stall_seconds=stall_seconds, oldest_sent_at=oldest_sent_at)
    return entry.status in RECONCILED_STATUSES and not entry.parked and last_moved(entry) < cutoff


def is_expired_dead_letter(entry: LedgerEntry, *, due_by: float) -> bool:
    """Unfinished, marked dead-lettered, and not written since `due_by` (the retention ago)."""
    return (
        entry.status in RECONCILED_STATUSES
        and entry.dead_lettered_at is not None
        and entry.updated_at <= due_by
    )


def is_due_parked(entry: LedgerEntry, *, now: float) -> bool:
    """A parked wait that has come to its end."""
    return entry.status is InvoiceStatus.RETRYING and entry.parked and (entry.retry_at or 0) <= now


@dataclass
class ReconcileReport:
    """What one run found; the handler returns it, so `make invoke` shows it."""

    requeued: dict[str, list[str]] = field(default_factory=dict)
    """Lost keys queued again, by the status they were found in."""
    returned: list[str] = field(default_factory=list)
    """Parked keys queued again at their due time."""
    failed: list[str] = field(default_factory=list)
    """Keys that could not be queued again (no stored invoice, queue refused)."""
    complete: bool = True
    """False when the run stopped early (a budget or its time) with more possibly left."""

    def as_dict(self) -> dict[str, object]:
        return {
            "requeued": self.requeued,
            "returned": len(self.returned),
            "failed": self.failed,
            "complete": self.complete,
        }


class Reconciler:
    def __init__(
        self,
        *,
        ledger: WorkLedger,
        queue: InvoiceQueue,
        queue_age: QueueAge,
        clock: Callable[[], float],
        stall_seconds: float,
        budgets: Budgets = Budgets(),
        concurrency: int = 1,
        dead_letter_retention_seconds: float = DEAD_LETTER_RETENTION_SECONDS,
    ) -> None:
        self._dead_letter_retention = dead_letter_retention_seconds
        self._ledger = ledger
        self._queue = queue
        self._queue_age = queue_age
        self._clock = clock
        self._stall_seconds = stall_seconds
        self._budgets = budgets
        self._pool = (
            ThreadPoolExecutor(concurrency, thread_name_prefix="reconcile") if concurrency > 1 else None
        )

    def reconcile(self, seconds_left: Callable[[], float]) -> ReconcileReport:
        """One pass over the lists. A ledger outage while listing ends the run (the next
        scheduled run retries); a failure on one entry is counted and skipped."""
        report = ReconcileReport()
        oldest_sent_at = self._queue_age.oldest_sent_at()

        def out_of_time() -> bool:
            return seconds_left() < SECONDS_KEPT_IN_HAND

        for work in VISITS:
            if out_of_time():
                report.complete = False
                break
            now = self._clock()
            due_by = {
                WorkList.PARKED: now,
                WorkList.DEAD_LETTERED: now - self._dead_letter_retention,
            }.get(
                work,
                lost_before(now=now, stall_seconds=self._stall_seconds, oldest_sent_at=oldest_sent_at),
            )
            found, more = self._ledger.due(
                work, due_by=due_by, limit=self._budgets.of(work), out_of_time=out_of_time
            )
            report.complete = report.complete and not more
            if work is WorkList.PARKED:
                chosen = [entry for entry in found if is_due_parked(entry, now=now)]
            elif work is WorkList.DEAD_LETTERED:
                chosen = [entry for entry in found if is_expired_dead_letter(entry, due_by=due_by)]
            else:
                chosen = [
                    entry
                    for entry in found
                    if is_stalled(
                        entry, now=now, stall_seconds=self._stall_seconds, oldest_sent_at=oldest_sent_at
                    )
                ]
            for wave in _waves(chosen):
                if out_of_time():
                    report.complete = False
                    return report
                self._requeue(wave, now, report)
        return report

    def _requeue(self, wave: Sequence[LedgerEntry], now: float, report: ReconcileReport) -> None:
        """Mark each entry of the wave, read its stored invoice, then send those that are ready."""
        ready: list[tuple[LedgerEntry, QueuedInvoice]] = []
        for entry, outcome in zip(
            wave, self._each(lambda entry: self._prepare(entry, now), wave), strict=True
        ):
            if isinstance(outcome, QueuedInvoice):
                ready.append((entry, outcome))
            elif outcome is not None:
                self._unqueued(entry, now, report, outcome)
        if not ready:
            return
        try:
            self._queue.send([message for _, message in ready])
        except QueueUnavailableError as error:
            unsent = set(error.unsent) if error.unsent else {entry.key for entry, _ in ready}
        else:
            unsent = set()
        for entry, _ in ready:
            if entry.key in unsent:
                self._unqueued(entry, now, report, "queue_unavailable")
            else:
                self._queued(entry, now, report)

    def _prepare(self, entry: LedgerEntry, now: float) -> QueuedInvoice | str | None:
        """The message to send for `entry`; None when it moved since it was read (or another run
        took it); the reason when it cannot be sent."""
        try:
            if not self._ledger.mark_reconciled(entry, now=now):
                return None
            message = self._ledger.body(entry.key)
        except LedgerUnavailableError:
            return "ledger_unavailable"
        if message is None or message.content_hash != entry.content_hash:
            # An entry accepted before bodies were stored, or a body a losing racer overwrote.
            return "no_stored_invoice"
        return message

    def _queued(self, entry: LedgerEntry, now: float, report: ReconcileReport) -> None:
        key = str(entry.key)
        if entry.parked:
            count("ParkedReturned")
            report.returned.append(key)
            return
        count("Reconciled", status=str(entry.status))
        report.requeued.setdefault(str(entry.status), []).append(key)
        logger.warning(
            "stalled invoice queued again",
            extra={
                **_context(entry),
                "stalled_for_seconds": round(now - due_at(entry)),
                "attempts": entry.attempts,
            },
        )

    def _unqueued(self, entry: LedgerEntry, now: float, report: ReconcileReport, reason: str) -> None:
        """Not queued again: a QUEUED entry is marked so that the ERP's resend queues it."""
        count("ReconcileFailed")
        report.failed.append(str(entry.key))
        logger.error("invoice could not be queued again", extra={**_context(entry), "reason": reason})
        if entry.status is InvoiceStatus.QUEUED and reason != "ledger_unavailable":
            # Unmarked for a ledger outage: the next run finds it again and tries once more.
            with suppress(LedgerUnavailableError):
                self._ledger.mark_send_failed(entry.key, now=now)

    def _each[T, R](self, work: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return list(self._pool.map(work, items) if self._pool else map(work, items))


def _waves(entries: Sequence[LedgerEntry]) -> Iterator[Sequence[LedgerEntry]]:
    for start in range(0, len(entries), WAVE):
        yield entries[start : start + WAVE]


def _context(entry: LedgerEntry) -> Mapping[str, object]:
    return {
        "invoice_key": str(entry.key),
        "status": str(entry.status),
        "parked": entry.parked,
        "correlation_id": entry.correlation_id,
    }
