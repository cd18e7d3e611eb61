"""In-memory fakes of the relay's three ports (Ledger, InvoiceQueue, Fynd), a fake clock, and
faults that can be injected at any step.

The fakes follow the same rules as the real adapters: the ledger's conditional writes use the
domain's own state rules (`claim_refusal`, `sources_of`), the queue behaves as SQS does
(visibility, receive counts, receipt handles that go stale, a dead-letter queue after
maxReceiveCount), and Fynd applies each order once and answers IN453 after that.

Where AWS is stricter than the happy path, so are the fakes (each rule is named in a test,
tests/unit/test_fake_strictness.py, and checked against the adapters on moto by the contract
suite, tests/contract): a cancelled transaction's CancellationReasons decide the error as the
adapter reads them (`InMemoryLedger.cancel_next`), one transaction holds at most 100 actions,
SendMessageBatch may refuse some entries and take the rest (`RecordingQueue.refuse_next`),
SQS refuses characters outside its set, a stale receipt handle may still delete on a standard
queue (`RecordingQueue.stale_handles_delete`), and messages expire after the queue's retention
(the dead-letter queue's counted from the first send, as SQS does).

Faults are named steps: `faults.fail("ledger.record", LedgerUnavailableError("throttled"))`
makes the next record raise; `nth=3` the third; `times=None` every one. A `Crash` is a
BaseException: it stops the worker where it stands, as Lambda's timeout or an OOM would,
and nothing after it runs.
"""

import functools
import itertools
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from relay.adapters.rate import SLOW_SECONDS
from relay.adapters.work_index import DEFAULT_WORK_SHARDS, shard_of
from relay.domain.dispatch import Dispatcher, DispatchLimits
from relay.domain.errors import AcceptRaceError, LedgerUnavailableError, QueueUnavailableError
from relay.domain.fynd import FyndAmbiguous, FyndCall, FyndCallRefused, FyndReceipt, OrderError
from relay.domain.intake import Action, Admission, InvoiceAcceptance
from relay.domain.invoice import Invoice, InvoiceKey, InvoiceType
from relay.domain.ledger import (
    InvoiceStatus,
    LastError,
    LedgerEntry,
    WorkList,
    claim_refusal,
    is_parked_wait,
    sources_of,
)
from relay.domain.messages import QueuedInvoice, ReceivedMessage
from relay.domain.policy import Backoff, CodePolicy, Invoiced, Rejected, RetryLater, Verdict, outage_backoff
from relay.domain.ports import Claim, Reservation
from relay.domain.reconcile import Budgets, Reconciler, ReconcileReport, due_at
from relay.domain.shipment import ShipmentInfo


class Crash(BaseException):
    """The worker dies at this step: nothing after it runs, its answer never reaches SQS."""


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleep_calls: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """What the dispatcher's `sleep` does here: time passes, nothing waits."""
        self.sleep_calls.append(seconds)
        self.now += seconds


@dataclass
class _Plan:
    error: BaseException | None
    nth: int
    times: int | None
    action: Callable[[], None] | None = None


class Faults:
    """Where and when a fake fails. Every fake calls `hit(step)` at each of its steps."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._plans: dict[str, list[_Plan]] = defaultdict(list)

    def fail(self, step: str, error: BaseException, *, nth: int = 1, times: int | None = 1) -> None:
        """Raise `error` at the nth next call of `step` (counted from now), `times` times (None: always)."""
        self._plans[step].append(_Plan(error, self.calls[step] + nth, times))

    def meanwhile(self, step: str, action: Callable[[], None], *, nth: int = 1) -> None:
        """Run `action` once, at the nth next call of `step`, before the step goes on: what other
        workers and the clock do while this one is held up there (a slow call, a GC pause)."""
        self._plans[step].append(_Plan(None, self.calls[step] + nth, 1, action))

    def clear(self) -> None:
        self._plans.clear()

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """No planned fault fires inside the block (another worker's steps); they stand after it."""
        plans, self._plans = self._plans, defaultdict(list)
        try:
            yield
        finally:
            self._plans = plans

    def hit(self, step: str) -> None:
        self.calls[step] += 1
        for plan in list(self._plans.get(step, [])):
            if self.calls[step] >= plan.nth and (plan.times is None or plan.times > 0):
                if plan.times is not None:
                    plan.times -= 1
                if plan.action is not None:
                    plan.action()
                    continue
                assert plan.error is not None
                raise plan.error


TRANSACTION_LIMIT = 100
"""Actions in one DynamoDB TransactWriteItems call; more is a ValidationException."""


def cancellation(reasons: Sequence[str]) -> Exception:
    """What a transaction cancelled with these CancellationReasons codes (one per action, "None"
    for an action that would have succeeded) means to the ledger port, as the adapter reads it:
    any ConditionalCheckFailed is a race (read again and decide again), even beside a throttle;
    only throttles, conflicts or no reason at all are an outage."""
    if "ConditionalCheckFailed" in reasons:
        return AcceptRaceError("an invoice key changed while this request was being accepted")
    named = ", ".join(sorted(set(reasons) - {"None"})) or "no reason given"
    return LedgerUnavailableError(f"invoice ledger cancelled the write ({named})")


_LIST_OF_STATUS: dict[InvoiceStatus, WorkList] = {
    status: WorkList(str(status)) for status in InvoiceStatus if str(status) in set(WorkList)
}
"""Each status' own list (an Enum lookup by value costs microseconds, and every write asks)."""


def work_list(entry: LedgerEntry) -> WorkList | None:
    """The work index list an entry is in (relay.adapters.work_index); None: not indexed."""
    if entry.status is InvoiceStatus.INVOICED:
        return None
    if entry.dead_lettered_at is not None:
        return WorkList.DEAD_LETTERED
    if entry.parked:
        return WorkList.PARKED
    return _LIST_OF_STATUS.get(entry.status) or WorkList(str(entry.status))


@functools.lru_cache(maxsize=1 << 16)
def cached_shard_of(key: InvoiceKey, shards: int) -> int:
    """relay.adapters.work_index.shard_of, remembered: every ledger write asks it for the entry
    before and after (index meters, the scale world's charges), a hash each time otherwise."""
    return shard_of(key, shards)


def work_partition(entry: LedgerEntry | None, shards: int = DEFAULT_WORK_SHARDS) -> str | None:
    """The work index partition (`workShard`) an entry is in: "<list>#<shard>"; None: in none."""
    listed = work_list(entry) if entry is not None else None
    if entry is None or listed is None:
        return None
    return f"{listed}#{cached_shard_of(entry.key, shards)}"


def due_of(entry: LedgerEntry) -> float:
    """The entry's dueAt; for an entry a test put in place without one, its status' clock."""
    return entry.due_at if entry.due_at is not None else due_at(entry)


class IndexMeter:
    """Index write units per partition and second, as DynamoDB counts them on a GSI: an item
    that changes its index key costs a delete and a put (1 WCU each per KB; the fake's items
    are under 1 KB), one that keeps its key but changes a projected attribute costs 1.

    Both the work index (workShard, dueAt) and the legacy ByStatus (statusKey, updatedAt) are
    metered, so a run shows what each would have taken (docs/scale.md)."""

    def __init__(self, clock: Callable[[], float], shards: int) -> None:
        self.work: Counter[tuple[int, str]] = Counter()
        self.by_status: Counter[tuple[int, str]] = Counter()
        self._clock = clock
        self._shards = shards

    def record(self, old: LedgerEntry | None, new: LedgerEntry) -> None:
        second = int(self._clock())
        self._count(self.work, second, self._work_key(old), self._work_key(new))
        self._count(self.by_status, second, self._status_key(old), self._status_key(new))

    @staticmethod
    def _count(
        meter: Counter[tuple[int, str]],
        second: int,
        old: tuple[str, float] | None,
        new: tuple[str, float] | None,
    ) -> None:
        if old == new and new is not None:
            meter[(second, new[0])] += 1
            return
        for key in (old, new):
            if key is not None:
                meter[(second, key[0])] += 1

    def _work_key(self, entry: LedgerEntry | None) -> tuple[str, float] | None:
        partition = work_partition(entry, self._shards)
        return None if entry is None or partition is None else (partition, due_of(entry))

    @staticmethod
    def _status_key(entry: LedgerEntry | None) -> tuple[str, float] | None:
        if entry is None or entry.status is InvoiceStatus.INVOICED:
            return None
        return (
            "DEAD_LETTERED" if entry.dead_lettered_at is not None else str(entry.status),
            entry.updated_at,
        )

    @staticmethod
    def peak(meter: Counter[tuple[int, str]]) -> tuple[int, str]:
        """The most units one partition took in one second, and which partition."""
        if not meter:
            return 0, ""
        (_, partition), units = max(meter.items(), key=lambda item: item[1])
        return units, partition


class InMemoryLedger:
    """The Ledger port over a dict, with the DynamoDB adapter's conditions, and its work index."""

    def __init__(
        self, clock: Callable[[], float], faults: Faults | None = None, *, shards: int = DEFAULT_WORK_SHARDS
    ) -> None:
        self.meter = IndexMeter(clock, shards)
        self.entries: dict[InvoiceKey, LedgerEntry] = _MeteredEntries(self.meter)
        self.bodies: dict[InvoiceKey, str] = {}
        """The queued message body of every accepted invoice, as the reconciler reads it."""
        self.writes: Counter[str] = Counter()
        self.shards = shards
        self._clock = clock
        self._faults = faults or Faults()
        self.cancellations: list[list[str]] = []
        self.claimants: dict[InvoiceKey, str] = {}
        """The owner of each key's latest granted claim (the entry forgets it once recorded)."""
        self.claimed: set[tuple[InvoiceKey, str]] = set()
        """Every (key, owner) that was granted a claim."""
        self.refused_records: list[tuple[InvoiceKey, str, Verdict]] = []
        """Verdicts a worker came to record after it had lost the key: (key, owner, verdict)."""

    def cancel_next(self, *reasons: str) -> None:
        """DynamoDB cancels the next accept transaction with these CancellationReasons codes
        (e.g. "None", "ConditionalCheckFailed", "ThrottlingError", "TransactionConflict")."""
        self.cancellations.append(list(reasons))

    def get(self, key: InvoiceKey) -> LedgerEntry | None:
        self._faults.hit("ledger.get")
        return self.entries.get(key)

    def get_many(self, keys: Iterable[InvoiceKey]) -> dict[InvoiceKey, LedgerEntry]:
        self._faults.hit("ledger.get_many")
        return {key: self.entries[key] for key in keys if key in self.entries}

    def accept(self, admissions: Sequence[Admission], *, now: float, correlation_id: str | None) -> None:
        self._faults.hit("ledger.accept")
        writes = [
            admission
            for admission in admissions
            if admission.action in (Action.CREATE, Action.RESUBMIT, Action.REPLACE)
        ]
        if len(writes) > TRANSACTION_LIMIT:
            raise LedgerUnavailableError(f"a transaction holds at most {TRANSACTION_LIMIT} actions")
        if writes and self.cancellations:
            raise cancellation(self.cancellations.pop(0))
        for admission in writes:
            entry = self.entries.get(admission.invoice.key)
            if admission.action is Action.CREATE and entry is not None:
                raise AcceptRaceError("an invoice key changed while this request was being accepted")
            if admission.action is Action.RESUBMIT and (
                entry is None
                or entry.status not in sources_of(InvoiceStatus.QUEUED)
                or entry.content_hash != admission.previous_hash
            ):
                raise AcceptRaceError("an invoice key changed while this request was being accepted")
            if admission.action is Action.REPLACE and (
                entry is None
                or entry.status is not InvoiceStatus.QUEUED
                or entry.content_hash != admission.previous_hash
            ):
                raise AcceptRaceError("an invoice key changed while this request was being accepted")
        for admission in writes:
            invoice = admission.invoice
            entry = self.entries.get(invoice.key)
            self.entries[invoice.key] = LedgerEntry(
                key=invoice.key,
                status=InvoiceStatus.QUEUED,
                content_hash=admission.content_hash,
                invoice_number=invoice.invoiceNumber,
                attempts=0,
                accepted_at=now,
                updated_at=now,
                correlation_id=correlation_id,
                history=entry.history if entry else (),  # a resubmission keeps the audit trail
                due_at=now,
            )
            self.bodies[invoice.key] = QueuedInvoice(
                invoice=invoice,
                content_hash=admission.content_hash,
                accepted_at=now,
                correlation_id=correlation_id,
            ).to_body()
            self.writes["accept"] += 1
        self._faults.hit("ledger.accept.after")

    def claim(
        self, message: QueuedInvoice, *, message_id: str, owner: str, now: float, lease_seconds: float
    ) -> Claim:
        self._faults.hit("ledger.claim")
        key = message.invoice.key
        entry = self.entries.get(key)
        refusal = claim_refusal(entry, message.content_hash, now)
        if refusal is not None:
            return Claim(entry, refusal)
        claimed = LedgerEntry(
            key=key,
            status=InvoiceStatus.IN_PROGRESS,
            content_hash=message.content_hash,
            invoice_number=entry.invoice_number if entry else message.invoice.invoiceNumber,
            attempts=(entry.attempts if entry else 0) + 1,
            accepted_at=entry.accepted_at if entry else message.accepted_at,
            updated_at=now,
            lease_owner=owner,
            lease_until=now + lease_seconds,
            last_error=entry.last_error if entry else None,
            correlation_id=entry.correlation_id if entry else None,
            history=entry.history if entry else (),  # as DynamoDB's claim: an update keeps it
            retry_at=entry.retry_at if entry else None,
            claim_message_id=message_id,
            claimed_from=entry.status if entry else InvoiceStatus.QUEUED,
            due_at=now + lease_seconds,
            sent_at=entry.sent_at if entry else None,
        )
        self.entries[key] = claimed
        self.claimants[key] = owner
        self.claimed.add((key, owner))
        self.writes["claim"] += 1
        self._faults.hit("ledger.claim.after")
        return Claim(claimed)

    def record(
        self, key: InvoiceKey, verdict: Verdict, *, owner: str, now: float, ack_id: str | None
    ) -> bool:
        self._faults.hit("ledger.record")
        entry = self.entries.get(key)
        if entry is None or entry.status not in sources_of(verdict.status) or entry.lease_owner != owner:
            self.refused_records.append((key, owner, verdict))
            return False
        changes: dict[str, object] = {
            "status": verdict.status,
            "updated_at": now,
            "lease_owner": None,
            "lease_until": None,
            "dead_lettered_at": None,
            "due_at": now,
            "parked": False,
        }
        match verdict:  # one replace() with every change: a hot path of make scale
            case Invoiced(already=already, confirmed_by=confirmed_by):
                changes.update(
                    last_error=None,
                    retry_at=None,
                    already_invoiced=already,
                    fynd_ack_id=ack_id,
                    confirmed_by=confirmed_by,
                    due_at=None,
                )
            case Rejected(code=code, message=message):
                changes.update(last_error=LastError(code, message), retry_at=None)
            case RetryLater(reason=reason, message=message, delay_seconds=delay, nothing_sent=nothing_sent):
                changes.update(
                    last_error=LastError(reason, message, nothing_sent),
                    retry_at=now + delay,
                    due_at=now + delay,
                    parked=is_parked_wait(delay, reason),
                )
        moved = replace(entry, **changes)  # type: ignore[arg-type]
        self.entries[key] = moved
        self.writes["record"] += 1
        self._faults.hit("ledger.record.after")
        return True

    def mark_send_failed(self, key: InvoiceKey, *, now: float) -> bool:
        self._faults.hit("ledger.mark_send_failed")
        entry = self.entries.get(key)
        if entry is None or entry.status is not InvoiceStatus.QUEUED:
            return False
        self.entries[key] = replace(entry, send_failed_at=now)
        self.writes["mark_send_failed"] += 1
        return True

    def stamp_sent(self, message: QueuedInvoice, *, now: float, until: float) -> bool:
        """The adapter's conditional write: unfinished, this content, not parked or dead-lettered,
        due by `now`; sentAt and dueAt only."""
        self._faults.hit("ledger.stamp_sent")
        entry = self.entries.get(message.invoice.key)
        if (
            entry is None
            or entry.status.is_final
            or entry.content_hash != message.content_hash
            or entry.dead_lettered_at is not None
            or entry.parked
            or entry.due_at is None
            or entry.due_at > now
        ):
            return False
        self.entries[entry.key] = replace(entry, sent_at=now, due_at=until)
        self.writes["stamp_sent"] += 1
        return True

    def mark_dead_lettered(self, message: QueuedInvoice, *, message_id: str, now: float) -> bool:
        self._faults.hit("ledger.mark_dead_lettered")
        entry = self.entries.get(message.invoice.key)
        if (
            entry is None
            or entry.status.is_final
            or entry.content_hash != message.content_hash
            or entry.claim_message_id not in (None, message_id)
        ):
            return False
        self.entries[entry.key] = replace(entry, dead_lettered_at=now, updated_at=now, due_at=now)
        self.writes["mark_dead_lettered"] += 1
        return True

    # ---- the work index (relay.domain.reconcile.WorkLedger; relay_cli's lists) ----
    def due(
        self, work: WorkList, *, due_by: float, limit: int, out_of_time: Callable[[], bool]
    ) -> tuple[list[LedgerEntry], bool]:
        """The adapter's Query per shard: each shard's earliest, an equal share of `limit` each;
        a shard is one page here, and `out_of_time` is asked before each."""
        self._faults.hit("ledger.due")
        if limit <= 0:
            return [], True
        share = math.ceil(limit / self.shards)
        found: list[LedgerEntry] = []
        more = False
        for n in range(self.shards):
            if out_of_time():
                more = True
                continue
            in_shard = sorted(
                (
                    e
                    for e in self._in(work)
                    if cached_shard_of(e.key, self.shards) == n and due_of(e) <= due_by
                ),
                key=due_of,
            )
            found += in_shard[:share]
            more = more or len(in_shard) > share
        found.sort(key=due_of)
        return found[:limit], more or len(found) > limit

    def listed(
        self,
        work: WorkList,
        *,
        since: float | None = None,
        until: float | None = None,
        error_code: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[LedgerEntry]:
        found = [
            entry
            for entry in self._in(work)
            if (since is None or due_of(entry) >= since)
            and (until is None or due_of(entry) <= until)
            and (error_code is None or (entry.last_error is not None and entry.last_error.code == error_code))
        ]
        found.sort(key=lambda entry: (due_of(entry), str(entry.key)), reverse=newest_first)
        return found if limit is None else found[:limit]

    def _in(self, work: WorkList) -> list[LedgerEntry]:
        return [entry for entry in self.entries.values() if work_list(entry) is work]

    def mark_reconciled(self, entry: LedgerEntry, *, now: float) -> bool:
        self._faults.hit("ledger.mark_reconciled")
        current = self.entries.get(entry.key)
        if current is None or (current.status, current.updated_at, current.content_hash) != (
            entry.status,
            entry.updated_at,
            entry.content_hash,
        ):
            return False
        self.entries[entry.key] = replace(current, updated_at=now, due_at=now, parked=False)
        self.writes["mark_reconciled"] += 1
        return True

    def body(self, key: InvoiceKey) -> QueuedInvoice | None:
        self._faults.hit("ledger.body")
        text = self.bodies.get(key)
        return QueuedInvoice.from_body(text) if text else None


class _MeteredEntries(dict[InvoiceKey, LedgerEntry]):
    """The ledger's entries; every assignment (a ledger write, or a test putting an entry in
    place) is metered on the indexes, as DynamoDB would bill the index writes."""

    def __init__(self, meter: IndexMeter) -> None:
        super().__init__()
        self._meter = meter

    def __setitem__(self, key: InvoiceKey, entry: LedgerEntry) -> None:
        self._meter.record(self.get(key), entry)
        super().__setitem__(key, entry)


@dataclass
class QueuedMessage:
    message_id: str
    body: str
    receipt_handle: str = ""
    receive_count: int = 0
    visible_at: float = 0.0
    sent_at: float = 0.0


_SQS_REFUSES = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""SendMessage: "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF. Any
characters not included in this list will be rejected" (InvalidMessageContents). moto takes them."""


def sqs_refuses(body: str) -> bool:
    """SQS answers InvalidMessageContents to this body."""
    return _SQS_REFUSES.search(body) is not None


class RecordingQueue:
    """The InvoiceQueue port with SQS's semantics, and the event source's side of it.

    `retention_seconds` and `dead_letter_retention_seconds` are the template's
    MessageRetentionPeriod of the queue (4 days) and of its dead-letter queue (14 days).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        faults: Faults | None = None,
        *,
        visibility_timeout: float = 660,
        max_receive_count: int = 8,
        retention_seconds: float = 345_600,
        dead_letter_retention_seconds: float = 1_209_600,
    ) -> None:
        self.messages: dict[str, QueuedMessage] = {}
        self.dead_letters: list[QueuedMessage] = []
        self.expired: list[QueuedMessage] = []
        """Messages SQS deleted because they outlived their queue's retention."""
        self.requests: Counter[str] = Counter()
        self.stale_handles_delete = False
        """A standard queue may delete a message named by a receipt handle from an earlier
        receive, even while another consumer holds it ("Amazon SQS can delete a message from a
        queue even if a visibility timeout setting causes the message to be locked by another
        consumer", DeleteMessage). Off: a stale handle deletes nothing, as it usually does."""
        self._clock = clock
        self._faults = faults or Faults()
        self._visibility_timeout = visibility_timeout
        self._max_receive_count = max_receive_count
        self._retention = retention_seconds
        self._dead_letter_retention = dead_letter_retention_seconds
        self.refusals: list[Callable[[int, QueuedInvoice], bool]] = []
        self._ids = itertools.count(1)

    def refuse_next(self, refuses: Callable[[int, QueuedInvoice], bool]) -> None:
        """The next send's SendMessageBatch refuses the entries `refuses(index, message)` names
        and takes the rest (a partial failure): `send` raises naming the refused invoices."""
        self.refusals.append(refuses)

    # ---- the port ----
    def send(self, messages: Sequence[QueuedInvoice]) -> None:
        """The adapter's contract: every message queued, or QueueUnavailableError naming the
        invoices SQS did not take (the rest are queued: SendMessageBatch is not atomic)."""
        self._faults.hit("queue.send")
        self.requests["send"] += 1
        refuses = self.refusals.pop(0) if self.refusals else None
        unsent = []
        for index, message in enumerate(messages):
            if sqs_refuses(message.to_body()) or (refuses is not None and refuses(index, message)):
                unsent.append(message.invoice.key)
            else:
                self._put(message, 0)
        self._faults.hit("queue.send.after")
        if unsent:
            raise QueueUnavailableError(f"{len(unsent)} invoice(s) could not be queued", unsent)

    def send_later(self, message: QueuedInvoice, delay_seconds: int) -> None:
        self._faults.hit("queue.send_later")
        self.requests["send_later"] += 1
        if sqs_refuses(message.to_body()):
            raise QueueUnavailableError("an invoice could not be queued again (InvalidMessageContents)")
        self._put(message, delay_seconds)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.requests["change_visibility"] += 1
        try:
            self._faults.hit("queue.change_visibility")
        except QueueUnavailableError:
            return  # best effort, as the SQS adapter swallows the error
        held = self._by_handle(receipt_handle)
        if held is not None:
            held.visible_at = self._clock() + seconds

    # ---- the event source (Lambda's poller) ----
    def receive(self, limit: int = 10) -> list[ReceivedMessage]:
        """Take up to `limit` visible messages, as the poller does; over-received ones go to the DLQ."""
        now = self._clock()
        self.expire()
        batch: list[ReceivedMessage] = []
        for held in sorted(self.messages.values(), key=lambda item: (item.visible_at, item.sent_at)):
            if len(batch) >= limit or held.visible_at > now:
                continue
            if held.receive_count >= self._max_receive_count:
                del self.messages[held.message_id]
                self.dead_letters.append(held)
                continue
            batch.append(self._deliver(held))
        return batch

    def redeliver(self, message_id: str) -> ReceivedMessage | None:
        """At-least-once delivery: hand an in-flight message out again (its older handle goes stale)."""
        held = self.messages.get(message_id)
        return self._deliver(held) if held is not None else None

    def answer(self, batch: Sequence[ReceivedMessage], failures: Sequence[str]) -> None:
        """Lambda's side of ReportBatchItemFailures: delete every message of the batch not named."""
        assert set(failures) <= {delivery.message_id for delivery in batch}, (
            "named a message not in its batch"
        )
        for delivery in batch:
            if delivery.message_id not in failures:
                held = self._by_handle(delivery.receipt_handle)
                if held is None and self.stale_handles_delete:
                    held = self.messages.get(delivery.message_id)
                if held is not None:  # a stale receipt handle usually deletes nothing
                    del self.messages[held.message_id]

    def crash(self, batch: Sequence[ReceivedMessage]) -> None:
        """The invocation died: nothing is deleted, every message returns after its visibility."""

    def expire(self) -> None:
        """SQS deletes a message once it outlives its queue's retention; a dead letter's age
        counts from its first send, not from its move to the dead-letter queue."""
        now = self._clock()
        for held in list(self.messages.values()):
            if held.sent_at + self._retention <= now:
                del self.messages[held.message_id]
                self.expired.append(held)
        kept = [held for held in self.dead_letters if held.sent_at + self._dead_letter_retention > now]
        self.expired += [held for held in self.dead_letters if held not in kept]
        self.dead_letters = kept

    # ---- reading the state ----
    def live_keys(self) -> Counter[InvoiceKey]:
        return Counter(QueuedInvoice.from_body(held.body).invoice.key for held in self.messages.values())

    def oldest_sent_at(self) -> float:
        """When the oldest message still on the queue (in flight or not) was sent, of those
        received fewer than three times; now if none. As SQS's ApproximateAgeOfOldestMessage:
        a message received three times or more is moved to the back and no longer counted."""
        return min(
            (held.sent_at for held in self.messages.values() if held.receive_count < 3),
            default=self._clock(),
        )

    def next_visible_at(self) -> float | None:
        return min((held.visible_at for held in self.messages.values()), default=None)

    def _put(self, message: QueuedInvoice, delay: float) -> None:
        message_id = f"m-{next(self._ids)}"
        now = self._clock()
        self.messages[message_id] = QueuedMessage(
            message_id, message.to_body(), visible_at=now + delay, sent_at=now
        )

    def _deliver(self, held: QueuedMessage) -> ReceivedMessage:
        held.receive_count += 1
        held.receipt_handle = f"{held.message_id}/r{held.receive_count}-{next(self._ids)}"
        held.visible_at = self._clock() + self._visibility_timeout
        return ReceivedMessage(
            held.message_id, held.receipt_handle, held.receive_count, QueuedInvoice.from_body(held.body)
        )

    def _by_handle(self, receipt_handle: str) -> QueuedMessage | None:
        message_id = receipt_handle.split("/", 1)[0]
        held = self.messages.get(message_id)
        return held if held is not None and held.receipt_handle == receipt_handle else None


class FakeQueueAge:
    """The QueueAge port (relay.adapters.queue_age) over the fake queue: the send time of its
    oldest message, as CloudWatch's ApproximateAgeOfOldestMessage says it `lag_seconds` late.
    `known = False` is CloudWatch unreachable (None)."""

    def __init__(
        self, queue: "RecordingQueue", clock: Callable[[], float], *, lag_seconds: float = 60
    ) -> None:
        self.known = True
        self._queue = queue
        self._clock = clock
        self._lag = lag_seconds
        self._seen: list[tuple[float, float]] = []

    def observe(self) -> None:
        """Take a datapoint now (a world that runs the clock calls this each minute)."""
        self._seen.append((self._clock(), self._queue.oldest_sent_at()))

    def oldest_sent_at(self) -> float | None:
        if not self.known:
            return None
        self.observe()
        reported = [sent for at, sent in self._seen if at <= self._clock() - self._lag]
        # No datapoint old enough yet: the latest one, less the lag (what the lag could hide).
        return reported[-1] if reported else self._seen[-1][1] - self._lag


@dataclass
class ScriptedFynd:
    """Fynd as the relay sees it: applies each order at most once, answers IN453 after that.

    `codes` gives an order a standing refusal (IN401, IN400, IN422); `early_until` answers
    IN403 until the clock passes the time given. Faults: "fynd.before" (raise before anything
    happens), "fynd.after" (Fynd applied the call, then the answer was lost: raise that error).
    """

    clock: Callable[[], float]
    faults: Faults = field(default_factory=Faults)
    codes: dict[str, str] = field(default_factory=dict)
    early_until: dict[str, float] = field(default_factory=dict)
    refuse_calls_over: int | None = None
    """Answer a whole-call 413 when a call carries more orders than this."""
    refuse_alone: set[str] = field(default_factory=set)
    """Orders whose invoice Fynd refuses with a whole-call 422 whenever it is in the call."""
    invoiced: set[InvoiceKey] = field(default_factory=set)
    applied: Counter[InvoiceKey] = field(default_factory=Counter)
    already: Counter[InvoiceKey] = field(default_factory=Counter)
    """IN453 answers: each one is a duplicate that reached Fynd."""
    sent: Counter[InvoiceKey] = field(default_factory=Counter)
    calls: list[FyndCall] = field(default_factory=list)
    budgets: list[float] = field(default_factory=list)
    reads: Counter[str] = field(default_factory=Counter)
    read_budgets: list[tuple[float, float]] = field(default_factory=list)
    """(clock at the read's start, its time budget) of every Shipment Info read."""
    call_starts: list[float] = field(default_factory=list)
    """The clock when each Update Invoice call started."""
    read_seconds: float = 0.0
    """How long each Shipment Info read takes on the clock (a FakeClock's `advance`)."""
    credentials: dict[str, str] = field(default_factory=dict)
    """Location-level credentials by location; every other location uses "company"."""
    novel_status: set[str] = field(default_factory=set)
    """Orders whose Shipment Info answers a status value the relay has never seen."""

    def shipment_info(
        self, order_id: str, location_code: str | None, *, time_budget_seconds: float
    ) -> ShipmentInfo:
        """Fynd's Get Shipment Info, from the same per-order state (sale invoices). Faults:
        "fynd.read" raises before anything is read."""
        self.read_budgets.append((self.clock(), time_budget_seconds))
        self.faults.hit("fynd.read")
        self.reads[order_id] += 1
        if self.read_seconds:
            advance = getattr(self.clock, "advance", None)
            assert advance is not None, "read_seconds needs a FakeClock"
            advance(min(self.read_seconds, time_budget_seconds))
        if order_id in self.novel_status:
            return ShipmentInfo(order_id, True, order_status="TELEPORTED", bag_status="bag_teleported")
        if InvoiceKey(order_id, InvoiceType.SALE) in self.invoiced:
            return ShipmentInfo(order_id, True, order_status="PROCESSING", bag_status="bag_invoiced")
        if self.codes.get(order_id) == "IN401":
            return ShipmentInfo(order_id, True, order_status="CANCELLED", bag_status="cancelled_customer")
        if self.early_until.get(order_id, 0) > self.clock():
            return ShipmentInfo(order_id, True, order_status="CREATED", bag_status="placed")
        return ShipmentInfo(order_id, True, order_status="CONFIRMED", bag_status="bag_confirmed")

    def credential_for(self, location_code: str | None) -> str:
        self.faults.hit("fynd.credential")
        return self.credentials.get(location_code or "", "company")

    def update_invoices(self, call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        self.budgets.append(time_budget_seconds)
        self.call_starts.append(self.clock())
        self.faults.hit("fynd.before")
        self.calls.append(call)
        if self.refuse_calls_over is not None and len(call.invoices) > self.refuse_calls_over:
            raise FyndCallRefused("Fynd refused the call (413)", status=413)
        if any(invoice.orderId in self.refuse_alone for invoice in call.invoices):
            raise FyndCallRefused("Fynd refused the call (422)", status=422)
        errors: dict[str, OrderError] = {}
        for invoice in call.invoices:
            key = invoice.key
            self.sent[key] += 1
            code = self._code(invoice.orderId, key)
            if code is None:
                self.invoiced.add(key)
                self.applied[key] += 1
            else:
                errors[invoice.orderId] = OrderError(invoice.orderId, code, f"fake Fynd says {code}")
                if code == "IN453":
                    self.already[key] += 1
        self.faults.hit("fynd.after")
        return FyndReceipt(
            call, errors, ack_id=f"ack-{len(self.calls)}", status="PARTIAL" if errors else "SUCCESS"
        )

    def _code(self, order_id: str, key: InvoiceKey) -> str | None:
        if key in self.invoiced:
            return "IN453"
        if order_id in self.codes:
            return self.codes[order_id]
        if self.early_until.get(order_id, 0) > self.clock():
            return "IN403"
        return None


class InMemoryRateLimiter:
    """The RateLimiter port over a dict, with the DynamoDB adapter's rule (relay.adapters.rate):
    per credential, `next_at` (the next free start), `interval` (1 / calls per second) and
    `slow_until` (when a slowed pace goes back to the configured one). Every grant is logged in
    `grants` as (credential, start), so a test can check the pace across dispatchers."""

    def __init__(self, calls_per_second: float, *, slow_factor: float = 2, max_slowdown: float = 8) -> None:
        self.base_interval = 1 / calls_per_second
        self.slow_factor = slow_factor
        self.max_interval = self.base_interval * max_slowdown
        self.state: dict[str, dict[str, float]] = {}
        self.grants: list[tuple[str, float]] = []
        self.throttles: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def acquire(self, credential: str, *, now: float, not_after: float) -> Reservation:
        with self._lock:
            item = self.state.setdefault(
                credential, {"next_at": now, "interval": self.base_interval, "slow_until": 0.0}
            )
            if item["interval"] > self.base_interval and item["slow_until"] <= now:
                item["interval"] = self.base_interval  # a quiet spell after the last 429
            start = max(item["next_at"], now)
            if start > not_after:
                return Reservation(False, start)
            item["next_at"] = start + item["interval"]
            self.grants.append((credential, start))
            return Reservation(True, start)

    def throttled(self, credential: str, *, now: float, retry_after: float) -> None:
        with self._lock:
            item = self.state.setdefault(
                credential, {"next_at": now, "interval": self.base_interval, "slow_until": 0.0}
            )
            until = now + retry_after
            if item["next_at"] >= until:
                return  # another dispatcher already answered this 429
            self.throttles.append((credential, until))
            item["next_at"] = until
            item["interval"] = min(self.max_interval, item["interval"] * self.slow_factor)
            item["slow_until"] = until + SLOW_SECONDS


def lost_answer() -> FyndAmbiguous:
    return FyndAmbiguous("no answer from Fynd after sending (fake)")


SETTINGS = DispatchLimits(
    lease_seconds=120,
    max_receive_count=8,
    request_seconds=18,
    call_budget_seconds=36,
    record_reserve_seconds=5,
)
"""The template's defaults: a 60 s function, 3 + 15 s Fynd timeouts, a 120 s lease."""


class World:
    """The relay's domain wired over the fakes: ingest's acceptance, and dispatchers that take
    batches from the queue the way Lambda's event source hands them out."""

    def __init__(
        self,
        *,
        settings: DispatchLimits = SETTINGS,
        deadline_seconds: float = 86_400,
        limiter: InMemoryRateLimiter | None = None,
        read_limiter: InMemoryRateLimiter | None = None,
    ) -> None:
        self.limiter = limiter
        self.read_limiter = read_limiter
        self.clock = FakeClock()
        self.faults = Faults()
        self.ledger = InMemoryLedger(self.clock, self.faults)
        self.queue = RecordingQueue(self.clock, self.faults, max_receive_count=settings.max_receive_count)
        self.fynd = ScriptedFynd(self.clock, self.faults)
        self.settings = settings
        self.policy = CodePolicy(
            Backoff(30, 3600, lambda: 0.5), deadline_seconds, outage_backoff(30, lambda: 0.5)
        )
        self.acceptance = InvoiceAcceptance(ledger=self.ledger, queue=self.queue, clock=self.clock)
        self.queue_age = FakeQueueAge(self.queue, self.clock)

    def dispatcher(self, owner: str = "worker-1") -> Dispatcher:
        return Dispatcher(
            ledger=self.ledger,
            fynd=self.fynd,
            queue=self.queue,
            policy=self.policy,
            settings=self.settings,
            owner=owner,
            clock=self.clock,
            limiter=self.limiter,
            read_limiter=self.read_limiter,
            sleep=self.clock.sleep,
        )

    def accept(self, *invoices: Invoice, correlation_id: str | None = "wh-1") -> list[Admission]:
        return self.acceptance.accept(list(invoices), correlation_id=correlation_id)

    def queue_again(self, *invoices: Invoice) -> None:
        """Another message for each accepted invoice, from the body ingest stored: what an ERP's
        retry after a failed send, the reconciler or an operator's redrive puts on the queue."""
        self.queue.send([QueuedInvoice.from_body(self.ledger.bodies[item.key]) for item in invoices])

    def dispatch(
        self,
        batch: Sequence[ReceivedMessage],
        *,
        owner: str = "worker-1",
        seconds_left: float = 60.0,
        timed: bool = False,
    ) -> list[str]:
        """One invocation on `batch`; Lambda then deletes every message it did not name. `timed`:
        the invocation's time left runs down with the clock (it ends `seconds_left` from now)."""
        ends = self.clock() + seconds_left
        left = (lambda: ends - self.clock()) if timed else (lambda: seconds_left)
        failures = self.dispatcher(owner).dispatch(batch, left)
        self.queue.answer(batch, failures)
        return failures

    def run(
        self, limit: int = 10, *, owner: str = "worker-1", seconds_left: float = 60.0, timed: bool = False
    ) -> list[str]:
        """Receive one batch (if any is visible) and dispatch it."""
        batch = self.queue.receive(limit)
        return self.dispatch(batch, owner=owner, seconds_left=seconds_left, timed=timed) if batch else []

    RECONCILE_PERIOD = 300.0
    """The reconciler's schedule (template.yaml: rate(5 minutes))."""

    def drain(self, *, limit: int = 10, max_rounds: int = 500) -> None:
        """Run batches, moving the clock to the next visible message, until the queue is empty
        and nothing is parked; a parked entry comes back by the reconciler's next scheduled run
        after it is due, as in AWS."""
        for _ in range(max_rounds):
            parked = [due_of(entry) for entry in self.ledger.listed(WorkList.PARKED)]
            if not self.queue.messages and not parked:
                return
            visible_at = self.queue.next_visible_at()
            if parked:
                period = self.RECONCILE_PERIOD
                next_run = math.ceil(max(min(parked), self.clock.now) / period) * period
                if visible_at is None or next_run < visible_at:
                    self.clock.now = max(self.clock.now, next_run)
                    self.reconcile()
                    continue
            if visible_at is not None and visible_at > self.clock.now:
                self.clock.now = visible_at
            self.run(limit)
        raise AssertionError("the queue did not drain")

    def status(self, key: InvoiceKey) -> InvoiceStatus | None:
        entry = self.ledger.entries.get(key)
        return entry.status if entry else None

    def reconcile(
        self,
        *,
        stall_seconds: float = 900,
        max_per_run: int = 500,
        max_parked_per_run: int = 10_000,
        seconds_left: float | Callable[[], float] = 60.0,
    ) -> ReconcileReport:
        """One scheduled reconciler run over the same ledger and queue, the queue's age read
        from the fake queue (`queue_age`)."""
        reconciler = Reconciler(
            ledger=self.ledger,
            queue=self.queue,
            queue_age=self.queue_age,
            clock=self.clock,
            stall_seconds=stall_seconds,
            budgets=Budgets(lost=max_per_run, parked=max_parked_per_run),
        )
        left = seconds_left if callable(seconds_left) else (lambda: float(seconds_left))  # type: ignore[misc]
        return reconciler.reconcile(left)


__all__ = [
    "Crash",
    "FakeClock",
    "FakeQueueAge",
    "Faults",
    "InMemoryLedger",
    "InMemoryRateLimiter",
    "IndexMeter",
    "QueuedMessage",
    "RecordingQueue",
    "ScriptedFynd",
    "World",
    "lost_answer",
    "work_list",
    "work_partition",
]
