"""Accepting a verified webhook's invoices: decide, record them in the ledger, then queue them.

Deciding (`admit`) is pure: given what the ledger holds, same key and same content is a
duplicate (answered with its state, never sent twice); different content for a key the ledger
holds is a conflict, unless that key was REJECTED, in which case the corrected invoice starts
over, or unless it is an enrichment (below). `InvoiceAcceptance` decides, applies the
decisions, and reads the ledger only when it must.

An enrichment replaces the recorded version (Action.REPLACE, answered 202 QUEUED): the key is
still QUEUED, so no dispatcher has claimed it, and the new version is the recorded one with
fields added and none changed (`Invoice.only_adds_to`; the same `invoiceNumber` follows). An
ERP that sent an invoice before its IRN existed thus sends the full one and is not refused.
Never sent twice: the ledger's replacement is conditional on the entry being QUEUED with the
recorded content, and a claim on it being QUEUED (or idle) with the message's content, both on
the same item, so exactly one of them wins. A claim first leaves the entry IN_PROGRESS: the
replacement is refused, read again and answered 409. A replacement first leaves the entry with
the new content: the first version's message is refused as SUPERSEDED and dropped, and only
the new version's message can be claimed. Once claimed or final, different content is a 409.

Most invoices are new, so the first decision assumes the ledger holds none of them and goes
straight to the write, whose conditions (`attribute_not_exists`) are the proof: one ledger
round trip instead of a read and a write. If any key is recorded, the write is refused whole,
and acceptance reads the ledger and decides again, as after a race. A webhook above
`optimistic_limit` invoices is read first (the DynamoDB adapter writes the bodies of more
than 50 new invoices ahead of their entries, and a refused write must not leave those behind).

The ledger write comes first and is all or nothing; the queue send comes after and must
succeed for every invoice before the sender hears 202. If the send fails, the entries stay
QUEUED, the sender gets a 503 and retries, and the retry queues them again
(Action.REQUEUE). A duplicate of a QUEUED invoice is queued again only when its sender
cannot have heard the 202:
- the same delivery again: its `webhook-id` is the one that accepted the entry (a Standard
  Webhooks sender keeps the id when it resends after a 5xx, a timeout or a crash of ingest);
- or an entry marked `send_failed_at`: ingest marks what SQS did not take, and what a ledger
  write whose answer was lost (a timeout) may have recorded, as time allows, for senders whose
  retries carry a new id (or none, as the ERP presets).
Any other duplicate is answered with its state, so an ERP resending while the queue is deep
adds nothing to it. What neither covers, the reconciler queues again once the entry has
made no progress for its window (relay.domain.reconcile).

Three guards keep that promise:
- Every message is built and proven to round-trip (`relay.domain.messages.round_trips`)
  before the ledger is written: an invoice the dispatcher could not read is refused (422)
  instead of being recorded QUEUED with a message that is dead-lettered unread.
- A write refused because a key was recorded (a duplicate, or another copy of the same webhook
  racing this one) is decided again from a fresh read, up to ADMIT_ROUNDS reads: the same
  content is then a duplicate answered with its state, different content a conflict (409).
  A race that outlasts the rounds is an outage for the sender (503, retry), never a 409.
- The ledger is written only while `seconds_left()` covers `reserve_seconds`, the worst case
  of the writes and the whole send (see `relay.wiring`): once written, the send has the time
  it needs before the function's timeout; otherwise nothing is written at all (503). A
  re-read after a refused write fits in what that check kept, and the next check refuses.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from relay.domain.errors import (
    AcceptanceOutOfTime,
    AcceptRaceError,
    ConflictError,
    KeyConflict,
    LedgerUnavailableError,
    QueueUnavailableError,
    UnqueueableInvoices,
)
from relay.domain.invoice import Invoice, InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry
from relay.domain.messages import QueuedInvoice, round_trips
from relay.domain.ports import InvoiceQueue, Ledger
from relay.observability import count, logger


class Action(StrEnum):
    CREATE = "create"
    """New key: record it QUEUED and queue it."""
    RESUBMIT = "resubmit"
    """Corrected content for a REJECTED key: back to QUEUED and queue it."""
    REQUEUE = "requeue"
    """Duplicate of a QUEUED entry whose sender may not have heard the 202: queue it again."""
    REPLACE = "replace"
    """An enrichment of a QUEUED, unclaimed key (fields added, none changed): the new version
    replaces the recorded one and is queued; the first version's message is then superseded."""
    ANSWER = "answer"
    """Any other duplicate (queued, in flight or final): just report its state."""


@dataclass(frozen=True)
class Admission:
    invoice: Invoice
    content_hash: str
    action: Action
    status: InvoiceStatus
    previous_hash: str | None = None

    @property
    def enqueue(self) -> bool:
        return self.action is not Action.ANSWER


def admit(
    invoices: Sequence[Invoice],
    recorded: Mapping[InvoiceKey, LedgerEntry],
    *,
    webhook_id: str | None = None,
    queued_versions: Mapping[InvoiceKey, Invoice] | None = None,
) -> list[Admission]:
    """One admission per invoice, in order; raises ConflictError naming every conflict at once.
    `webhook_id` is the request's: the delivery that accepted an entry, seen again, requeues it.
    `queued_versions`: the recorded invoice of QUEUED entries whose content differs (read by
    `needs_recorded_version`), so an enrichment can be told from a conflict."""
    versions = queued_versions or {}
    admissions: list[Admission] = []
    conflicts: list[KeyConflict] = []
    for index, invoice in enumerate(invoices):
        content_hash = invoice.content_hash()
        entry = recorded.get(invoice.key)
        if entry is None:
            admissions.append(Admission(invoice, content_hash, Action.CREATE, InvoiceStatus.QUEUED))
        elif entry.content_hash == content_hash:
            resent = webhook_id is not None and webhook_id == entry.correlation_id
            unsent = entry.status is InvoiceStatus.QUEUED and (resent or entry.send_failed_at is not None)
            action = Action.REQUEUE if unsent else Action.ANSWER
            admissions.append(Admission(invoice, content_hash, action, entry.status))
        elif entry.status is InvoiceStatus.REJECTED:
            admissions.append(
                Admission(invoice, content_hash, Action.RESUBMIT, InvoiceStatus.QUEUED, entry.content_hash)
            )
        elif _enriches(invoice, entry, versions.get(invoice.key)):
            admissions.append(
                Admission(invoice, content_hash, Action.REPLACE, InvoiceStatus.QUEUED, entry.content_hash)
            )
        else:
            conflicts.append(KeyConflict(index, invoice.key, entry.status, entry.invoice_number))
    if conflicts:
        raise ConflictError(conflicts)
    return admissions


def _enriches(invoice: Invoice, entry: LedgerEntry, recorded: Invoice | None) -> bool:
    return (
        entry.status is InvoiceStatus.QUEUED
        and recorded is not None
        and invoice.invoiceNumber == entry.invoice_number
        and invoice.only_adds_to(recorded)
    )


def needs_recorded_version(invoice: Invoice, entry: LedgerEntry | None) -> bool:
    """Whether deciding `invoice` needs the recorded version of its key: a QUEUED entry with
    other content for the same invoice number may be enriched rather than conflict."""
    return (
        entry is not None
        and entry.status is InvoiceStatus.QUEUED
        and entry.content_hash != invoice.content_hash()
        and entry.invoice_number == invoice.invoiceNumber
    )


ADMIT_ROUNDS = 3


def _forever() -> float:
    return math.inf


class InvoiceAcceptance:
    def __init__(
        self,
        *,
        ledger: Ledger,
        queue: InvoiceQueue,
        clock: Callable[[], float],
        reserve_seconds: float = 0.0,
        mark_seconds: float = 0.0,
        optimistic_limit: int | None = None,
    ) -> None:
        self._ledger = ledger
        self._queue = queue
        self._clock = clock
        self._reserve = reserve_seconds
        self._mark_seconds = mark_seconds
        """The longest one ledger write takes: a failed send's marks are written only while it fits."""
        self._optimistic_limit = optimistic_limit
        """Webhooks of up to this many invoices are written before the ledger is read (None: any)."""

    def accept(
        self,
        invoices: Sequence[Invoice],
        *,
        correlation_id: str | None,
        seconds_left: Callable[[], float] = _forever,
    ) -> list[Admission]:
        count("InvoicesReceived", len(invoices))
        optimistic = self._optimistic_limit is None or len(invoices) <= self._optimistic_limit
        # Round 0, when optimistic, reads nothing: every key is taken for new (see above).
        for round_number in range(0 if optimistic else 1, ADMIT_ROUNDS + 1):
            recorded = self._ledger.get_many(invoice.key for invoice in invoices) if round_number else {}
            admissions = self._admit(
                invoices, recorded, correlation_id, self._queued_versions(invoices, recorded)
            )
            now = self._clock()
            to_queue = _messages(admissions, recorded, now, correlation_id)
            if seconds_left() < self._reserve:
                raise AcceptanceOutOfTime("too little time left to record and queue these invoices")
            try:
                self._ledger.accept(admissions, now=now, correlation_id=correlation_id)
            except AcceptRaceError:
                if round_number:
                    count("AcceptRaces")
                    logger.info(
                        "an invoice key changed while accepting; reading it again",
                        extra={"round": round_number},
                    )
                continue
            except LedgerUnavailableError:
                # A timeout may have lost only the answer: the write applied, no message sent.
                # Mark what it wrote, so the sender's retry queues it whatever its webhook-id (a
                # mark finds nothing where the write did not apply).
                self._mark_unsent([message.invoice.key for message in to_queue], seconds_left)
                raise
            try:
                self._queue.send(to_queue)
            except QueueUnavailableError as unavailable:
                self._mark_unsent(
                    unavailable.unsent or [message.invoice.key for message in to_queue], seconds_left
                )
                raise
            self._report(admissions, to_queue)
            return admissions
        raise AcceptRaceError(f"invoice keys kept changing over {ADMIT_ROUNDS} attempts to accept them")

    def _mark_unsent(self, keys: Sequence[InvoiceKey], seconds_left: Callable[[], float]) -> None:
        """Mark each entry whose message SQS did not take, so the sender's retry queues it again;
        what cannot be marked (no time left, the ledger down) waits for the reconciler."""
        marked = 0
        for key in keys:
            if seconds_left() < self._mark_seconds:
                break
            try:
                self._ledger.mark_send_failed(key, now=self._clock())
            except LedgerUnavailableError:
                break
            marked += 1
        if marked < len(keys):
            logger.warning(
                "invoices not queued nor marked for the sender's retry; the reconciler will queue them",
                extra={"invoice_keys": [str(key) for key in keys[marked:]]},
            )

    def _queued_versions(
        self, invoices: Sequence[Invoice], recorded: Mapping[InvoiceKey, LedgerEntry]
    ) -> dict[InvoiceKey, Invoice]:
        """The recorded invoice of each QUEUED key an invoice may enrich: one read each, only then.
        A stored body written for other content (a racer's) is no version of this entry."""
        versions: dict[InvoiceKey, Invoice] = {}
        for invoice in invoices:
            entry = recorded.get(invoice.key)
            if entry is not None and needs_recorded_version(invoice, entry):
                stored = self._ledger.body(invoice.key)
                if stored is not None and stored.content_hash == entry.content_hash:
                    versions[invoice.key] = stored.invoice
        return versions

    def _admit(
        self,
        invoices: Sequence[Invoice],
        recorded: Mapping[InvoiceKey, LedgerEntry],
        webhook_id: str | None,
        queued_versions: Mapping[InvoiceKey, Invoice],
    ) -> list[Admission]:
        try:
            return admit(invoices, recorded, webhook_id=webhook_id, queued_versions=queued_versions)
        except ConflictError as conflict:
            count("Conflicts", len(conflict.conflicts))
            logger.warning(
                "invoices conflict with recorded ones",
                extra={"invoice_keys": [str(item.key) for item in conflict.conflicts]},
            )
            raise

    def _report(self, admissions: Sequence[Admission], to_queue: Sequence[QueuedInvoice]) -> None:
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


def _messages(
    admissions: Sequence[Admission],
    recorded: Mapping[InvoiceKey, LedgerEntry],
    now: float,
    correlation_id: str | None,
) -> list[QueuedInvoice]:
    """The messages to queue, each proven to round-trip; UnqueueableInvoices naming any that do not."""
    messages = [
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
    broken = [message.invoice.key for message in messages if not round_trips(message)]
    if broken:
        raise UnqueueableInvoices(broken)
    return messages
