"""Fynd's per-order codes and whole-call failures, mapped to what the relay does about them.

| Fynd says                     | verdict                                           |
| ----------------------------- | ------------------------------------------------- |
| success                       | Invoiced                                          |
| IN453 already invoiced (sale) | Invoiced(already=True): a duplicate reached Fynd  |
| IN453 on a credit note        | RetryLater: proves nothing (see below); the retry |
|                               | reads Shipment Info, whose credit_note_generated  |
|                               | is the proof                                      |
| IN401 / IN400 / IN422         | Rejected, never retried                           |
| IN403 too early               | RetryLater with growing back-off (at most 299 s,  |
|                               | so it is sent again within 5 min of confirmation) |
|                               | until the deadline, then Rejected; nothing was    |
|                               | applied, so the retry sends without a read        |
| any other code                | RetryLater (an operator sees it in the DLQ)       |
| whole call failed             | RetryLater, backed off by receive count (capped   |
|                               | at 15 min), honouring Retry-After                 |
| whole call refused (4xx) for  | Rejected FYND_REFUSED, with the HTTP status       |
| one invoice on its own        |                                                   |

Before an invoice is sent again after an attempt that may have reached Fynd unanswered (a lost
answer, a 5xx, a worker that died mid-call), its Shipment Info is read. An order Fynd answered
IN403 is not read: the answer proves nothing was applied, and it goes again in a call with
the others, where it costs a twentieth of a request rather than a request of its own. What a
read proves (relay.domain.shipment) decides, `for_shipment`:

| last attempt      | Shipment Info proves | verdict                                        |
| ----------------- | -------------------- | ---------------------------------------------- |
| any               | invoiced             | Invoiced, confirmed by shipment-info; no send  |
| IN403, then doubt | cancelled            | Rejected IN401, no send                        |
| IN403, then doubt | not yet confirmed    | RetryLater IN403 on the back-off (deadline too)|
| any               | anything else        | send, as without the read                      |

IN453 says the *shipment* is at or beyond invoiced (docs/fynd-update-invoice.md). For a sale
that is the invoice; a returned shipment is beyond invoiced whether or not its credit note
exists, so for a return IN453 is no proof and must not mark it INVOICED. It is retried as an
unknown code is: the retry's Shipment Info read proves the credit note (or not) before any
resend, and one that never proves it ends in the dead-letter queue, where an operator sees it.

Codes and reasons become metric dimensions only through `dimension()`, so an unknown code
Fynd invents tomorrow lands in "other" instead of minting a new CloudWatch metric.
"""

from collections.abc import Callable
from dataclasses import dataclass

from relay.domain.fynd import FyndCallError, OrderError
from relay.domain.invoice import InvoiceType
from relay.domain.ledger import PARK_EARLY_ORDER_FROM_SECONDS, InvoiceStatus
from relay.domain.shipment import ShipmentState

CANCELLED = "IN401"
UNKNOWN_ORDER = "IN400"
BAD_INVOICE = "IN422"
ALREADY_INVOICED = "IN453"
TOO_EARLY = "IN403"
TERMINAL_CODES = frozenset({CANCELLED, UNKNOWN_ORDER, BAD_INVOICE})

DEADLINE_PASSED = "IN403_DEADLINE"
"""Our own code for an order that stayed unconfirmed (IN403) past the deadline."""
SHIPMENT_INFO = "shipment-info"
"""`confirmedBy` of an invoice a Shipment Info read proved, with no second send."""
REFUSED_ALONE = "FYND_REFUSED"
"""Our own code for an invoice Fynd refused with a whole-call 4xx even when sent on its own."""

OUTAGE_CAP_SECONDS = 900
"""The longest wait after an infrastructure failure (Fynd or the ledger down): short enough to
resume within 15 minutes of recovery, long enough that 8 receives outlast a 30-minute outage."""

MAX_VISIBILITY_SECONDS = 43_200
"""SQS refuses a visibility timeout above 12 hours."""

TOO_EARLY_MAX_DELAY_SECONDS = PARK_EARLY_ORDER_FROM_SECONDS - 1
"""The longest wait between two attempts of an order Fynd answered IN403: the order is sent
again at most this long after its confirmation (plus the queue's own wait), so it is invoiced
within 10 minutes of it (issue 19). Under the parking threshold (relay.domain.ledger): each wait
is a fresh message delayed in SQS (relay.domain.dispatch), neither held in flight nor parked
behind the reconciler's 5-minute schedule, which would add up to 5 minutes to it."""
TOO_EARLY_SPREAD = 0.2
"""The random share of an IN403 wait: enough to spread the attempts, few enough that a long
wait costs few of them (each is a place in a Fynd call)."""


@dataclass(frozen=True)
class Invoiced:
    already: bool = False
    """Fynd answered IN453: the invoice was there before this call."""
    confirmed_by: str = "answer"
    """What proved it: Fynd's `answer`, its `IN453`, or a `shipment-info` read."""

    status = InvoiceStatus.INVOICED


@dataclass(frozen=True)
class Rejected:
    code: str
    message: str

    status = InvoiceStatus.REJECTED


@dataclass(frozen=True)
class RetryLater:
    reason: str
    """A Fynd code (IN403) or a whole-call failure's reason (fynd_unavailable, ...)."""
    message: str
    delay_seconds: int
    nothing_sent: bool = False
    """This attempt applied nothing at Fynd (429, the request never left, no time or no rate
    slot to send), and no earlier one is in doubt: the next attempt sends without reading
    Shipment Info first (relay.domain.dispatch)."""

    status = InvoiceStatus.RETRYING


Verdict = Invoiced | Rejected | RetryLater


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with equal jitter: half the step fixed, half random.

    `jitter` returns a number in [0, 1); injected so tests are repeatable. `spread` is the
    share of the step that is random (a half by default).
    """

    base_seconds: float
    cap_seconds: float
    jitter: Callable[[], float]
    spread: float = 0.5

    def delay(self, attempt: int, floor_seconds: float = 0) -> int:
        step = min(self.cap_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        wanted = max(step * (1 - self.spread) + step * self.spread * self.jitter(), floor_seconds)
        return int(min(MAX_VISIBILITY_SECONDS, max(1, round(wanted))))


def too_early_backoff(base_seconds: float, jitter: Callable[[], float]) -> Backoff:
    """Back-off between the attempts of an order Fynd answered IN403: growing from `base_seconds`
    to TOO_EARLY_MAX_DELAY_SECONDS, four fifths of each step fixed."""
    return Backoff(base_seconds, TOO_EARLY_MAX_DELAY_SECONDS, jitter, spread=TOO_EARLY_SPREAD)


def outage_backoff(base_seconds: float, jitter: Callable[[], float]) -> Backoff:
    """Back-off for infrastructure failures, by receive count: at least three quarters of each
    step is fixed, so the sum of receives 1..7 is known (over 30 min at a 30 s base)."""
    return Backoff(base_seconds, OUTAGE_CAP_SECONDS, jitter, spread=0.25)


@dataclass(frozen=True)
class CodePolicy:
    backoff: Backoff
    """Per-order retries (IN403, unknown codes), by attempt."""
    too_early_deadline_seconds: float
    outage: Backoff
    """Whole-call failures and ledger outages, by receive count."""
    too_early: Backoff | None = None
    """Waits between IN403 attempts, by attempt (`too_early_backoff`); None: `backoff`'s."""

    def for_order(
        self,
        error: OrderError | None,
        *,
        invoice_type: InvoiceType,
        attempt: int,
        accepted_at: float,
        now: float,
    ) -> Verdict:
        if error is None:
            return Invoiced()
        if error.code == ALREADY_INVOICED and invoice_type is InvoiceType.SALE:
            return Invoiced(already=True, confirmed_by=ALREADY_INVOICED)
        if error.code == ALREADY_INVOICED:
            message = (
                "IN453 on a credit note proves nothing (the shipment is past invoiced); Shipment Info decides"
            )
            return RetryLater(ALREADY_INVOICED, f"{message}: {error.message}", self.backoff.delay(attempt))
        if error.code in TERMINAL_CODES:
            return Rejected(error.code, error.message)
        if error.code == TOO_EARLY:
            return self._too_early(error.message, attempt=attempt, accepted_at=accepted_at, now=now)
        return RetryLater(
            error.code,
            f"unrecognised Fynd code {error.code}: {error.message}",
            self.backoff.delay(attempt),
        )

    def for_shipment(
        self, state: ShipmentState, *, waiting: bool, attempt: int, accepted_at: float, now: float
    ) -> Verdict | None:
        """What a Shipment Info read decides before a resend; None: send."""
        if state is ShipmentState.INVOICED:
            return Invoiced(confirmed_by=SHIPMENT_INFO)
        if waiting and state is ShipmentState.CANCELLED:
            return Rejected(CANCELLED, "order cancelled while waiting for confirmation (Shipment Info)")
        if waiting and state is ShipmentState.NOT_INVOICED:
            message = "order not confirmed yet (Shipment Info)"
            return self._too_early(message, attempt=attempt, accepted_at=accepted_at, now=now)
        return None

    def _too_early(self, message: str, *, attempt: int, accepted_at: float, now: float) -> Verdict:
        if now >= accepted_at + self.too_early_deadline_seconds:
            hours = self.too_early_deadline_seconds / 3600
            return Rejected(DEADLINE_PASSED, f"order still not confirmed after {hours:g} h: {message}")
        # Fynd answered for this order and applied nothing: the next attempt sends without a
        # Shipment Info read (a place in a call costs Fynd a twentieth of a read's request).
        waits = self.too_early or self.backoff
        return RetryLater(TOO_EARLY, message, waits.delay(attempt), nothing_sent=True)

    def for_call_failure(self, failure: FyndCallError, *, receive_count: int) -> RetryLater:
        return RetryLater(
            failure.reason,
            str(failure),
            self.outage.delay(receive_count, failure.retry_after or 0),
            nothing_sent=failure.nothing_sent,
        )

    def refused_alone(self, failure: FyndCallError) -> Rejected:
        return Rejected(
            REFUSED_ALONE, f"Fynd refused this invoice on its own (HTTP {failure.status}): {failure}"
        )


def code_policy(
    *, base_seconds: float, max_seconds: float, too_early_deadline_seconds: float, jitter: Callable[[], float]
) -> CodePolicy:
    """The dispatcher's policy as deployed (relay.wiring), and as `make scale` runs it."""
    return CodePolicy(
        Backoff(base_seconds, max_seconds, jitter),
        too_early_deadline_seconds,
        outage_backoff(base_seconds, jitter),
        too_early_backoff(base_seconds, jitter),
    )


KNOWN_CODES = frozenset({*TERMINAL_CODES, ALREADY_INVOICED, TOO_EARLY, DEADLINE_PASSED, REFUSED_ALONE})


def dimension(code: str, known: frozenset[str] = frozenset()) -> str:
    """A code or reason as a metric dimension value: Fynd's known codes and our own reasons pass,
    anything else becomes "other" (a dimension must never take unbounded values)."""
    return code if code in KNOWN_CODES or code in known else "other"
