"""What the domain needs from the outside world. The adapters implement these; tests use fakes."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from relay.domain.fynd import FyndCall, FyndReceipt
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import ClaimRefusal, LedgerEntry
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Verdict
from relay.domain.shipment import ShipmentInfo

if TYPE_CHECKING:
    from relay.domain.intake import Admission

__all__ = [
    "Claim",
    "ClaimRefusal",
    "Fynd",
    "InvoiceQueue",
    "Ledger",
    "RateLimiter",
    "Reservation",
]


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to claim a key: the entry as it now stands, and why not if refused."""

    entry: LedgerEntry | None
    refusal: ClaimRefusal | None = None

    @property
    def granted(self) -> bool:
        return self.refusal is None


class Ledger(Protocol):
    def get(self, key: InvoiceKey) -> LedgerEntry | None: ...

    def get_many(self, keys: Iterable[InvoiceKey]) -> dict[InvoiceKey, LedgerEntry]: ...

    def accept(self, admissions: "Sequence[Admission]", *, now: float, correlation_id: str | None) -> None:
        """Write every admission that changes the ledger, all or nothing; AcceptRaceError on a race."""
        ...

    def claim(
        self, message: QueuedInvoice, *, message_id: str, owner: str, now: float, lease_seconds: float
    ) -> Claim:
        """Take the key for `lease_seconds`, remembering which SQS message holds it."""
        ...

    def record(
        self, key: InvoiceKey, verdict: Verdict, *, owner: str, now: float, ack_id: str | None
    ) -> bool:
        """Record a verdict on an entry this owner holds; False when the lease was lost meanwhile."""
        ...

    def body(self, key: InvoiceKey) -> QueuedInvoice | None:
        """The invoice as its accepting transaction stored it (None when there is none)."""
        ...

    def mark_send_failed(self, key: InvoiceKey, *, now: float) -> bool:
        """Ingest recorded `key` QUEUED but could not queue its message: say so on the entry, so
        the sender's retry queues it again. False when the entry is no longer QUEUED."""
        ...

    def stamp_sent(self, message: QueuedInvoice, *, now: float, until: float) -> bool:
        """A dispatcher is about to queue a fresh copy of `message` without claiming its entry (a
        call deferred before its claims): set the entry's `sentAt` to `now` and its due time in
        its work list to `until`, the latest a fresh copy may go under this stamp, so the
        reconciler does not take the entry for lost while that copy waits (relay.domain.reconcile).
        One conditional write, no read: only on an unfinished entry holding this content, neither
        parked nor dead-lettered, and already due by `now`; a live lease, a back-off still running
        or an earlier stamp still covering it leave the entry as it is (so a stamp is written at
        most once per cover). Status, updatedAt and the lease stay untouched, so no claim, record
        or reconciler mark is disturbed. False when nothing was written."""
        ...

    def mark_dead_lettered(self, message: QueuedInvoice, *, message_id: str, now: float) -> bool:
        """The message `message_id` leaves for the dead-letter queue: mark the unfinished entry it
        holds (or that nothing has claimed yet), so the reconciler does not queue it again.
        False when the entry is final, holds other content, or another message claimed it."""
        ...


class InvoiceQueue(Protocol):
    def send(self, messages: Sequence[QueuedInvoice]) -> None:
        """Queue every message durably or raise QueueUnavailableError."""
        ...

    def send_later(self, message: QueuedInvoice, delay_seconds: int) -> None:
        """Queue one message after a delay, or raise QueueUnavailableError."""
        ...

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Best effort: a refused change leaves the message to return after the queue's timeout."""
        ...


@dataclass(frozen=True)
class Reservation:
    """A rate limiter's answer: `granted`, a request may start at `at` (the slot is taken);
    otherwise no slot is free by the time asked for, and `at` is when the next one is."""

    granted: bool
    at: float


class RateLimiter(Protocol):
    """One pace per Fynd credential, shared by every dispatcher instance (Fynd counts the
    credential, not the instance). A failure to reach the limiter raises
    RateLimiterUnavailableError; the dispatcher then sends unpaced (Fynd's 429 still holds it)."""

    def acquire(self, credential: str, *, now: float, not_after: float) -> Reservation:
        """Take the credential's next start slot if it comes by `not_after` (clock seconds)."""
        ...

    def throttled(self, credential: str, *, now: float, retry_after: float) -> None:
        """Fynd answered 429: no slot before now + retry_after, and the pace slows for a while."""
        ...


class Fynd(Protocol):
    def credential_for(self, location_code: str | None) -> str:
        """The credential calls for this location go out with (the rate limit's key); raises
        FyndCallError when it cannot be read."""
        ...

    def update_invoices(self, call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        """Send one call, all of it (token, call, one refresh) within the budget; raises
        FyndCallError when no per-order answer can be trusted."""
        ...

    def shipment_info(
        self, order_id: str, location_code: str | None, *, time_budget_seconds: float
    ) -> ShipmentInfo:
        """Read one order's Shipment Info; raises FyndCallError (FyndThrottled on a 429)."""
        ...
