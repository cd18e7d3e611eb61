"""Fynd's per-order codes and whole-call failures, mapped to what the relay does about them.

| Fynd says                     | verdict                                           |
| ----------------------------- | ------------------------------------------------- |
| success                       | Invoiced                                          |
| IN453 already invoiced        | Invoiced(already=True): a duplicate reached Fynd  |
| IN401 / IN400 / IN422         | Rejected, never retried                           |
| IN403 too early               | RetryLater with growing back-off until the        |
|                               | deadline, then Rejected                           |
| any other code                | RetryLater (an operator sees it in the DLQ)       |
| whole call failed             | RetryLater, honouring Retry-After                 |
"""

from collections.abc import Callable
from dataclasses import dataclass

from relay.domain.delivery import FyndCallError, OrderError

CANCELLED = "IN401"
UNKNOWN_ORDER = "IN400"
BAD_INVOICE = "IN422"
ALREADY_INVOICED = "IN453"
TOO_EARLY = "IN403"
TERMINAL_CODES = frozenset({CANCELLED, UNKNOWN_ORDER, BAD_INVOICE})

DEADLINE_PASSED = "IN403_DEADLINE"
"""Our own code for an order that stayed unconfirmed (IN403) past the deadline."""

MAX_VISIBILITY_SECONDS = 43_200
"""SQS refuses a visibility timeout above 12 hours."""


@dataclass(frozen=True)
class Invoiced:
    already: bool = False
    """Fynd answered IN453: the invoice was there before this call."""


@dataclass(frozen=True)
class Rejected:
    code: str
    message: str


@dataclass(frozen=True)
class RetryLater:
    reason: str
    """A Fynd code (IN403) or a whole-call failure's reason (fynd_unavailable, ...)."""
    message: str
    delay_seconds: int


Verdict = Invoiced | Rejected | RetryLater


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with equal jitter: half the step fixed, half random.

    `jitter` returns a number in [0, 1); injected so tests are repeatable.
    """

    base_seconds: float
    cap_seconds: float
    jitter: Callable[[], float]

    def delay(self, attempt: int, floor_seconds: float = 0) -> int:
        step = min(self.cap_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        wanted = max(step / 2 + step / 2 * self.jitter(), floor_seconds)
        return int(min(MAX_VISIBILITY_SECONDS, max(1, round(wanted))))


@dataclass(frozen=True)
class CodePolicy:
    backoff: Backoff
    too_early_deadline_seconds: float

    def for_order(self, error: OrderError | None, *, attempt: int, accepted_at: float, now: float) -> Verdict:
        if error is None:
            return Invoiced()
        if error.code == ALREADY_INVOICED:
            return Invoiced(already=True)
        if error.code in TERMINAL_CODES:
            return Rejected(error.code, error.message)
        if error.code == TOO_EARLY:
            deadline = accepted_at + self.too_early_deadline_seconds
            if now >= deadline:
                hours = self.too_early_deadline_seconds / 3600
                return Rejected(
                    DEADLINE_PASSED, f"order still not confirmed after {hours:g} h: {error.message}"
                )
            return RetryLater(TOO_EARLY, error.message, self.backoff.delay(attempt))
        return RetryLater(
            error.code,
            f"unrecognised Fynd code {error.code}: {error.message}",
            self.backoff.delay(attempt),
        )

    def for_call_failure(self, failure: FyndCallError, *, attempt: int) -> RetryLater:
        return RetryLater(failure.reason, str(failure), self.backoff.delay(attempt, failure.retry_after or 0))


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"
