"""The idempotency ledger's states and the only moves between them.

One entry per invoice key. Ingest creates it QUEUED; a dispatcher claims it (IN_PROGRESS,
under a lease so a crashed worker's claim runs out), then records what Fynd said. INVOICED
and REJECTED are final: nothing claims them again, which is what keeps duplicates from Fynd.
A REJECTED invoice may be sent again with different content (the ERP fixed it), which
starts it over as QUEUED.
"""

import functools
from dataclasses import dataclass
from enum import StrEnum

from relay.domain.invoice import InvoiceKey


class InvoiceStatus(StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    RETRYING = "RETRYING"
    INVOICED = "INVOICED"
    REJECTED = "REJECTED"

    @property
    def is_final(self) -> bool:
        return self in (InvoiceStatus.INVOICED, InvoiceStatus.REJECTED)


_MOVES: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.QUEUED: frozenset({InvoiceStatus.IN_PROGRESS}),
    InvoiceStatus.RETRYING: frozenset({InvoiceStatus.IN_PROGRESS}),
    # IN_PROGRESS -> IN_PROGRESS is another worker taking over an expired lease.
    InvoiceStatus.IN_PROGRESS: frozenset(
        {
            InvoiceStatus.IN_PROGRESS,
            InvoiceStatus.INVOICED,
            InvoiceStatus.REJECTED,
            InvoiceStatus.RETRYING,
        }
    ),
    InvoiceStatus.REJECTED: frozenset({InvoiceStatus.QUEUED}),
    InvoiceStatus.INVOICED: frozenset(),
}


PARK_AFTER_SECONDS = 900
"""A wait longer than this (SQS's longest DelaySeconds, 15 min) is parked in the ledger, not
held in flight: the dispatcher records RETRYING with its retryAt, acknowledges the message, and
the reconciler queues the invoice again when it is due (relay.domain.reconcile). A held
message counts against SQS's in-flight quota (about 120,000 per queue) for the whole wait."""

EARLY_ORDER_CODE = "IN403"
"""Fynd's "order not confirmed yet" (relay.domain.policy.TOO_EARLY)."""
PARK_EARLY_ORDER_FROM_SECONDS = 300
"""An early order's wait is parked from this long: the reconciler's period (5 min), so the
schedule adds at most the wait itself. An early order waits 10 to 60 minutes in a sale day's
model, and held in flight its waits filled about 160 in-flight messages per invoice/s; parked
from 5 minutes, about 56 (tests/benchmarks/work_index_load.py). Infrastructure failures are
not parked below PARK_AFTER_SECONDS: their back-off (at most 15 min) spends receives, so
a lasting outage still ends in the dead-letter queue."""


SEND_STAMP_SECONDS = 450
"""How long one send stamp covers the fresh copies a dispatcher queues of an entry it has not
claimed (relay.domain.ports.Ledger.stamp_sent): half the reconciler's default window
(ReconcileAfterMinutes, 15). A call deferred before its claim (no Fynd pace slot in time, or no
time left) writes nothing else, so an order waiting through a backlog costs one ledger write per
7.5 minutes, not one per deferral; a message lost after a stamp is found up to this much later."""


def is_parked_wait(delay_seconds: float, reason: str | None = None) -> bool:
    """Whether a retry after `delay_seconds` for `reason` is parked in the ledger rather than
    held in flight."""
    if reason == EARLY_ORDER_CODE:
        return delay_seconds >= PARK_EARLY_ORDER_FROM_SECONDS
    return delay_seconds > PARK_AFTER_SECONDS


class WorkList(StrEnum):
    """The lists of the ledger's work index (relay.adapters.work_index), each sorted by the time
    its entries are due. INVOICED entries are in none: the index is sparse.

    | list          | holds                                         | due at            |
    | ---           | ---                                           | ---               |
    | QUEUED        | QUEUED entries                                | queued at         |
    | IN_PROGRESS   | IN_PROGRESS entries                           | lease end         |
    | RETRYING      | RETRYING entries whose message is held        | retryAt           |
    | PARKED        | RETRYING entries parked, with no message      | retryAt           |
    | REJECTED      | REJECTED entries (for the operator)           | rejected at       |
    | DEAD_LETTERED | entries whose message went to the DLQ         | dead-lettered at  |

    The reconciler reads the first four, and DEAD_LETTERED for marks older than the dead-letter
    queue's retention (relay.domain.reconcile); `relay list` any of them.
    """

    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    RETRYING = "RETRYING"
    PARKED = "PARKED"
    REJECTED = "REJECTED"
    DEAD_LETTERED = "DEAD_LETTERED"


@functools.cache  # one entry per status: bounded by the enum
def sources_of(target: InvoiceStatus) -> frozenset[InvoiceStatus]:
    """The states an entry may be in for a write to move it to `target` (the DAL's condition)."""
    return frozenset(source for source, targets in _MOVES.items() if target in targets)


@dataclass(frozen=True)
class LastError:
    code: str
    message: str
    nothing_sent: bool = False
    """The attempt that recorded it applied nothing at Fynd, and none before it is in doubt
    (relay.domain.policy.RetryLater.nothing_sent)."""


@dataclass(frozen=True)
class LedgerEvent:
    """An operator's action on an entry, kept in its history: who did what, when and why.

    `replay` moves a REJECTED entry back to QUEUED, unchanged, once the cause is fixed
    (`relay replay`); `previous_error` is the rejection it undid.
    """

    action: str
    at: float
    by: str
    reason: str
    previous_error: LastError | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows about one invoice key; the status API shows it."""

    key: InvoiceKey
    status: InvoiceStatus
    content_hash: str
    invoice_number: str
    attempts: int
    accepted_at: float
    updated_at: float
    lease_owner: str | None = None
    lease_until: float | None = None
    last_error: LastError | None = None
    correlation_id: str | None = None
    fynd_ack_id: str | None = None
    history: tuple[LedgerEvent, ...] = ()
    """Operators' actions on the entry, oldest first (relay replay)."""
    retry_at: float | None = None
    already_invoiced: bool = False
    claim_message_id: str | None = None
    """The SQS message that took the latest claim: the one message that answers for the invoice."""
    claimed_from: "InvoiceStatus | None" = None
    """The status the latest claim took the entry from: IN_PROGRESS means the worker before
    this one died or lost its ledger holding the key, so its call's outcome is unknown."""
    confirmed_by: str | None = None
    """How an INVOICED entry was proved: `answer`, `IN453` or `shipment-info`."""
    dead_lettered_at: float | None = None
    """When the message that held the entry left for the dead-letter queue, its retries spent:
    the invoice waits for an operator's redrive, and the reconciler leaves it alone. The next
    claim or record clears it."""
    send_failed_at: float | None = None
    """When ingest recorded the invoice but SQS did not take its message: the next duplicate
    of the webhook queues it again (and only then: a QUEUED entry's message is otherwise on
    its way). The next claim clears it."""
    due_at: float | None = None
    """When the entry is next due in its work list (WorkList): None when in none (INVOICED)."""
    parked: bool = False
    """RETRYING with no message: the reconciler queues it again at retryAt (PARK_AFTER_SECONDS)."""
    sent_at: float | None = None
    """When a dispatcher last stamped the entry before queueing a fresh copy of it unclaimed (a
    deferral in a backlog, relay.domain.ports.Ledger.stamp_sent); the stamp moved `due_at` to
    SEND_STAMP_SECONDS later. A note for the operator: claims and records keep it, a fresh start
    (a resubmission, an enrichment, a replay) forgets it."""

    @property
    def waiting_since(self) -> float:
        """Where the IN403 deadline (TooEarlyDeadlineSeconds) counts from: the acceptance, or
        the latest replay, which starts the wait over. `accepted_at` itself stays the moment
        the relay first accepted the invoice, replays or not."""
        replays = [event.at for event in self.history if event.action == "replay"]
        return max([self.accepted_at, *replays])

    def lease_is_live(self, now: float) -> bool:
        return self.status is InvoiceStatus.IN_PROGRESS and (self.lease_until or 0) > now


class ClaimRefusal(StrEnum):
    FINAL = "final"
    """INVOICED or REJECTED: never sent again."""
    BUSY = "busy"
    """Another worker holds a live lease on it."""
    SUPERSEDED = "superseded"
    """The ledger holds different content for the key: this message is stale."""
    NOT_YET = "not_yet"
    """RETRYING, and its retryAt has not come: a copy must not bypass the back-off."""


def claim_refusal(entry: LedgerEntry | None, content_hash: str, now: float) -> ClaimRefusal | None:
    """Why a message carrying `content_hash` may not take the key now; None when it may.

    A missing entry is claimable: the ledger must never be the reason an invoice is lost. The
    DynamoDB adapter states the same rule as its claim's ConditionExpression.
    """
    if entry is None:
        return None
    if entry.status.is_final:
        return ClaimRefusal.FINAL
    if entry.content_hash != content_hash:
        return ClaimRefusal.SUPERSEDED
    if entry.lease_is_live(now):
        return ClaimRefusal.BUSY
    if entry.status is InvoiceStatus.RETRYING and (entry.retry_at or 0) > now:
        return ClaimRefusal.NOT_YET
    return None
