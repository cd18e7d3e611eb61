"""Every change of an invoice's final state, told back to the ERP (docs/interface.md, "Back to the ERP").

The ledger's stream names the keys whose final state changed: INVOICED, REJECTED, dead-lettered,
out of the dead-letter queue again, replayed or resubmitted back to QUEUED (the filter of
WritebackFeedFunction in template.yaml). The feed puts each key on the write-back FIFO queue,
one message group per key, in the order the ledger changed. This module decides what one
message of that queue does: read the entry as it stands now, and hand it to every target.

Why the entry as it stands now, not the state the message was made from: a message that
arrives late (redriven from the dead-letter queue, sent twice by the feed's retry) then has
no old state to write; it writes the present one again. Why one group per key: SQS FIFO hands
out one message of a group at a time, in order, so no two workers ever read, compare and write
the same ERP record at once, and each write starts after the previous one's read: the ERP's
record only moves forward. The ERPNext target also compares `relay_updated_at` before it
writes (`supersedes`), so a record is never put back to an older state, whatever the order.

The rules for a batch (SQS FIFO with Lambda's partial batch response), in order:
0. Unreadable: a message that names no key fails, and holds its group (rule 2), so it ends
   in the dead-letter queue where an operator sees it.
1. Out of time: a message that cannot be worked within what the invocation has left comes
   back at once (visibility 0), unworked.
2. Group held: a message whose key's group already failed in this batch fails too, unworked:
   it must not overtake the earlier message that comes back.
3. Gone: an entry that no longer exists (expired) writes nothing; the message is done.
4. Target down: a target that failed as a server (TargetDown) is not called again in this
   batch; the messages that need it fail.
5. Failed: a message a target did not take comes back after a back-off by its receive count,
   so an ERP down for hours is asked less and less often; it reaches the dead-letter queue
   only after the queue's maxReceiveCount (template.yaml: 8.6 h at least at the defaults).
"""

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.domain.errors import LedgerUnavailableError, TargetDown, WritebackFailed
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import LedgerEntry
from relay.domain.policy import Backoff
from relay.domain.status import iso_time, status_document

DEAD_LETTERED = "DEAD_LETTERED"
"""The status an ERP is told while the invoice's message waits in the dead-letter queue."""

DEAD_LETTER_REASON = "retries exhausted; waits in the dead-letter queue for an operator's redrive"


@dataclass(frozen=True)
class Outcome:
    """What the ERP is told about one invoice key: the ledger entry as it stood when read."""

    key: InvoiceKey
    invoice_number: str
    status: str
    """The ledger status, or DEAD_LETTERED."""
    fynd_code: str
    reason: str
    attempts: int
    updated_at: float
    document: Mapping[str, Any] = field(compare=False)
    """The status API's document of the entry: the generic callback's body."""

    @property
    def relay_updated_at(self) -> str:
        """ISO 8601, UTC, to the millisecond: fixed width, so two compare as text."""
        return iso_time(self.updated_at)

    @property
    def delivery_id(self) -> str:
        """The same for every delivery of this state of this key (a callback's webhook-id), so
        a receiver that saw it already can tell a retry from news."""
        digest = hashlib.sha256(f"{self.key}|{self.relay_updated_at}|{self.status}".encode()).hexdigest()
        return f"msg_{digest[:32]}"


def outcome_of(entry: LedgerEntry) -> Outcome:
    dead = entry.dead_lettered_at is not None
    code = entry.last_error.code if entry.last_error else ("IN453" if entry.already_invoiced else "")
    reason = entry.last_error.message if entry.last_error else ""
    if dead and not reason:
        reason = DEAD_LETTER_REASON
    return Outcome(
        key=entry.key,
        invoice_number=entry.invoice_number,
        status=DEAD_LETTERED if dead else str(entry.status),
        fynd_code=code,
        reason=reason,
        attempts=entry.attempts,
        updated_at=entry.updated_at,
        document=status_document(entry),
    )


def sync_fields(outcome: Outcome) -> dict[str, Any]:
    """The `Fynd Invoice Sync` record of an outcome (docs/erpnext/fynd_invoice_sync.json).

    `relay_key` names the record (the DocType's autoname), so there is one per invoice key
    whoever creates it first."""
    return {
        "relay_key": sync_name(outcome.key),
        "sales_invoice": outcome.invoice_number,
        "fynd_order_id": outcome.key.order_id,
        "invoice_type": str(outcome.key.invoice_type),
        "status": outcome.status,
        "fynd_code": outcome.fynd_code,
        "reason": outcome.reason,
        "attempts": outcome.attempts,
        "relay_updated_at": outcome.relay_updated_at,
    }


def sync_name(key: InvoiceKey) -> str:
    """The record's name in ERPNext: `<orderId>-<sale|return>` (Frappe names take no `#`)."""
    return f"{key.order_id}-{key.invoice_type}"


def supersedes(outcome: Outcome, recorded: Mapping[str, Any] | None) -> bool:
    """Whether `outcome` should be written over the `recorded` record (None: there is none).

    Never older over newer: a record with a later `relay_updated_at` stays. The same time with
    the same fields is already written (a redelivery): nothing to do."""
    if recorded is None:
        return True
    theirs, ours = str(recorded.get("relay_updated_at") or ""), outcome.relay_updated_at
    if theirs != ours:
        return theirs < ours
    return any(_plain(recorded.get(name)) != _plain(value) for name, value in sync_fields(outcome).items())


def _plain(value: Any) -> str:
    """Frappe answers an empty Data field as null or "", and an Int as a number."""
    return "" if value is None else str(value)


class WritebackTarget(Protocol):
    name: str
    """For logs and metrics: `erpnext` or `callback`."""

    def deliver(self, outcome: Outcome) -> None:
        """Make the ERP hold `outcome` (or something newer); TargetDown or OutcomeRefused if not."""
        ...


class EntryReader(Protocol):
    def get(self, key: InvoiceKey) -> LedgerEntry | None: ...


class HeldMessages(Protocol):
    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Best effort: a refused change leaves the message to return after the queue's timeout."""
        ...


@dataclass(frozen=True)
class WritebackMessage:
    """One message of the write-back queue: a key whose final state changed."""

    message_id: str
    receipt_handle: str
    receive_count: int
    key: InvoiceKey | None
    """None: the body names no key (rule 0)."""
    group_id: str


@dataclass
class WritebackReport:
    written: list[InvoiceKey] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Message ids that come back (batchItemFailures)."""


class Writeback:
    def __init__(
        self,
        *,
        ledger: EntryReader,
        targets: Sequence[WritebackTarget],
        queue: HeldMessages,
        backoff: Backoff,
        message_seconds: float,
        on_failure: Callable[[InvoiceKey, str, Exception], None] = lambda key, target, error: None,
    ) -> None:
        """`message_seconds`: the longest one message can take (every target's calls at their
        timeouts); a message starts only while that much is left. `on_failure` is told of each
        failure, for the logs and metrics."""
        self._ledger = ledger
        self._targets = tuple(targets)
        self._queue = queue
        self._backoff = backoff
        self._message_seconds = message_seconds
        self._on_failure = on_failure

    def write_back(
        self, messages: Sequence[WritebackMessage], seconds_left: Callable[[], float]
    ) -> WritebackReport:
        report = WritebackReport()
        held: set[str] = set()
        down: set[str] = set()
        for message in messages:
            if seconds_left() < self._message_seconds:  # rule 1
                report.failed.append(message.message_id)
                self._queue.change_visibility(message.receipt_handle, 0)
                continue
            if message.key is None or message.group_id in held:  # rules 0 and 2
                held.add(message.group_id)
                report.failed.append(message.message_id)
                self._hold(message)
                continue
            try:
                written = self._write(message.key, down)
            except (WritebackFailed, LedgerUnavailableError):  # rules 4 and 5
                held.add(message.group_id)
                report.failed.append(message.message_id)
                self._hold(message)
                continue
            if written:
                report.written.append(message.key)
        return report

    def _write(self, key: InvoiceKey, down: set[str]) -> bool:
        entry = self._ledger.get(key)
        if entry is None:  # rule 3
            return False
        outcome = outcome_of(entry)
        failure: WritebackFailed | None = None
        for target in self._targets:
            if target.name in down:
                failure = TargetDown(f"{target.name} is down for the rest of this batch")
                continue
            try:
                target.deliver(outcome)
            except WritebackFailed as error:
                self._on_failure(key, target.name, error)
                if isinstance(error, TargetDown):
                    down.add(target.name)
                failure = error
        if failure is not None:
            raise failure
        return True

    def _hold(self, message: WritebackMessage) -> None:
        self._queue.change_visibility(message.receipt_handle, self._backoff.delay(message.receive_count))


# ---- The feed: the ledger's stream to the write-back queue (WritebackFeedFunction) ----


@dataclass(frozen=True)
class LedgerChange:
    """One record of the ledger's stream that passed the feed's filter."""

    key: InvoiceKey
    event_id: str
    """The stream record's eventID: the FIFO deduplication id, so the feed's retry of a
    record within five minutes is not queued twice."""
    sequence_number: str
    """Where Lambda resumes the shard when this record's send failed."""


class ChangeQueue(Protocol):
    def send(self, changes: Sequence[LedgerChange]) -> list[LedgerChange]:
        """Queue each change in its key's message group; the changes SQS did not take."""
        ...


def ledger_change(record: Mapping[str, Any]) -> LedgerChange | None:
    """The change a stream record names, or None for an item that is no invoice entry (an
    invoice's stored body, `body#<key>`) or a key that cannot be read."""
    stream = record.get("dynamodb") or {}
    pk = ((stream.get("Keys") or {}).get("pk") or {}).get("S")
    if not isinstance(pk, str) or pk.startswith("body#"):
        return None
    try:
        key = InvoiceKey.parse(pk)
    except ValueError:
        return None
    return LedgerChange(key, str(record.get("eventID") or ""), str(stream.get("SequenceNumber") or ""))


def forward(changes: Sequence[LedgerChange], queue: ChangeQueue) -> LedgerChange | None:
    """Queue every change; the first one (in stream order) SQS did not take, None when all went.

    Lambda resumes the shard at that record (ReportBatchItemFailures), so it and every later
    one are sent again; those already queued are dropped by their deduplication id, and one
    queued twice after five minutes only writes the present state again."""
    unsent = {change.event_id for change in queue.send(changes)} if changes else set()
    return next((change for change in changes if change.event_id in unsent), None)
