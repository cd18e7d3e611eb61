"""One SQS batch of queued invoices, delivered to Fynd exactly once.

The steps, in order:
1. collapse copies of the same invoice inside the batch (ERPs retry blindly);
2. plan the batch's Fynd calls from the messages, oldest invoices first (one location and type,
   20 at most, a byte cap), and work the calls in parallel (`call_concurrency`); for each call:
3. claim each key in the ledger, naming the message that claims it. Copies of final keys and
   of stale content are acknowledged. A copy of a key another worker holds comes back after
   the lease, whether or not it is the holder's own message delivered twice (SQS delivers at
   least once, so the holder's message may already have been acknowledged by another worker):
   an invoice never loses its last message while it is unfinished. Every copy of a key
   waiting out its back-off (RETRYING before retryAt) comes back at retryAt, and every copy
   comes back when its claim meets a ledger outage; a worker that lost its lease acknowledges
   its message only once the entry is final (the new holder may hold that same message);
4. before sending an invoice again, read its Shipment Info when an earlier attempt may have
   reached Fynd with its answer lost: proof that it is invoiced records it with no second
   send (relay.domain.policy). No read follows an attempt whose error proves nothing was sent
   (a 429, a request that never left, no time or no rate slot, an order's IN403), unless an
   earlier one is in doubt: an order waiting for confirmation goes again in a call. With
   reads on a pace of their own, a lost answer's orders are read at once, in the same
   invocation (`_read_now`): what a read decides is recorded, and an order it would send
   again waits in doubt for its retry (a read that soon may race the lost request);
5. take the credential's next rate slot (the RateLimiter every dispatcher shares), send, map
   every order's answer to a verdict and record it. A whole-call 4xx (not 401/403/429) splits
   the call in halves, down to single invoices; one refused alone is rejected;
6. answer the messages: final verdicts are deleted, retries come back after their back-off
   (the message's visibility is changed), long waits are parked in the ledger (the message is
   deleted and the reconciler queues the invoice again when due), and only messages of this
   batch are ever named.

Rules that keep the promises:
- Once a Fynd call has returned, nothing raises out of `dispatch`: every outcome is recorded,
  or its message is held back until its lease ends (then the retry meets IN453, or the same
  refusal). A failed requeue returns the message instead of raising.
- The budget is computed again before every send and every read, never carried over: a call
  starts only while the invocation and every claim's lease leave it a whole request, and gets
  one total time budget (token, call, one refresh) that leaves room to record its outcome. A
  read may take only what leaves the send a whole request after it, so reads in waves of
  `fynd_concurrency` never outlast the lease or the invocation. A call with no time left is
  not even claimed: its messages wait, unclaimed, each entry only stamped (below).
- Waiting for time, a lease, a back-off or a rate slot never spends a receive: such a message
  is queued afresh with the wait as its delay (at most SQS's 15 minutes; longer waits are
  queued afresh before the last receive only), and this one is acknowledged. A copy of an
  unfinished invoice is never acknowledged without a fresh one in its place: the message a
  claim named may be a stale delivery of one already replaced.
- A fresh copy queued before any claim (a deferral for time or a rate slot) is preceded by the
  entry's send stamp (Ledger.stamp_sent, at most one write per SEND_STAMP_SECONDS): it moves
  the entry's due time past the copy, so the reconciler, which takes an entry for lost once
  the queue has moved past its last write, does not copy it while the copy waits in a
  backlog. A stamp that fails is counted (`SendStampFailed`); the copy is sent regardless.
- One pace per Fynd credential across every dispatcher (relay.adapters.rate): a request waits
  (sleeps) for its slot when it comes in time, else the call is deferred as above. A call's
  send takes its slot before the claims, so when the pace is booked ahead the call waits
  unclaimed, with no claim written (reads before a resend take slots of their own). Shipment
  Info reads keep a pace of their own when the dispatcher is given one (`read_limiter`: Fynd
  publishes no limit, and one counted per endpoint leaves the calls' pace to the calls);
  otherwise they share the calls'. A 429 holds every dispatcher on the pace it met (and, unless
  it met a read's own pace, the rest of the batch) for Retry-After, and slows that pace; the
  throttled request itself backs off as a failure.
- Claims, and the records of one call, go to the ledger concurrently (`ledger_concurrency`),
  so a call costs about three sequential ledger round trips (claim, call, record) whatever
  its size. Each write keeps its own condition; nothing is batched across keys.
- A ledger that cannot be reached fails only the messages it touched, never the whole batch.
  Infrastructure failures back off by receive count, exponentially with jitter, capped at
  15 minutes, so the default 8 receives outlast a 30-minute outage.
- A message whose invoice this worker has claimed never becomes visible again before the
  claim's lease runs out. The lease is shorter than the queue's visibility timeout, and every
  early return below either releases the claim first (records RETRYING) or waits out the lease.
- An IN403 order may wait up to a day for confirmation, far longer than maxReceiveCount
  receives would last: each wait (at most 299 s, relay.domain.policy) is a fresh message
  delayed in SQS (a new message starts at receive count 1, and is not in flight meanwhile).
- A long wait (an IN403 back-off from 5 min, any wait past SQS's longest delay of 15 min) is
  parked, not held: the record put the entry in the ledger's PARKED list at retryAt, so its
  message is acknowledged and the reconciler queues the invoice again when it is due
  (relay.domain.reconcile). A held message would count against SQS's in-flight quota (about
  120,000 per queue) for the whole wait. Only a recorded verdict parks: a lost lease holds.
- A message held on its last receive leaves for the dead-letter queue, a terminal state: its
  entry is marked (`mark_dead_lettered`) so the reconciler does not queue it again; an
  operator's redrive brings it back, and its next claim clears the mark.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError, RateLimiterUnavailableError
from relay.domain.fynd import (
    FyndAmbiguous,
    FyndCall,
    FyndCallError,
    FyndCallRefused,
    FyndReceipt,
    FyndThrottled,
    plan_calls,
)
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import SEND_STAMP_SECONDS, ClaimRefusal, InvoiceStatus, LedgerEntry, is_parked_wait
from relay.domain.messages import ReceivedMessage
from relay.domain.policy import TOO_EARLY, CodePolicy, Invoiced, Rejected, RetryLater, Verdict, dimension
from relay.domain.ports import Fynd, InvoiceQueue, Ledger, RateLimiter
from relay.domain.shipment import ShipmentState, classify_shipment
from relay.observability import count, logger

MAX_SQS_DELAY_SECONDS = 900

MIN_READ_SECONDS = 1.0
"""No Shipment Info read starts with less time than this for it (after the send's own time)."""
DEFAULT_THROTTLE_PAUSE_SECONDS = 1.0
"""The batch's pause after a 429 that carries no Retry-After."""
READ_PACE_SUFFIX = "#shipment-info"
"""A credential's Shipment Info pace, when reads are paced apart: the limiter's key."""

OUT_OF_TIME = "out_of_time"
LEDGER_UNAVAILABLE = "ledger_unavailable"
QUEUE_UNAVAILABLE = "queue_unavailable"
WAITING = "waiting"
"""Held back for no failure: the key's lease or back-off has not run out yet."""
_NO_FAILURE = frozenset({WAITING, OUT_OF_TIME})
"""Holds that wait for time, a lease, a back-off or a rate slot: they must not spend a receive."""
_OUR_REASONS = frozenset(
    {
        OUT_OF_TIME,
        LEDGER_UNAVAILABLE,
        QUEUE_UNAVAILABLE,
        WAITING,
        "fynd_error",
        "fynd_unavailable",
        "fynd_throttled",
        "fynd_ambiguous",
        "fynd_auth",
        "fynd_refused",
    }
)


@dataclass(frozen=True)
class DispatchLimits:
    lease_seconds: float
    max_receive_count: int
    request_seconds: float
    """The longest one request to Fynd can take (connect + read timeouts): the least a call needs."""
    call_budget_seconds: float
    """The most one call may take in all: a token fetch, the call, a refresh and the call again."""
    record_reserve_seconds: float = 5
    """Kept back from every call's budget to record its outcome and answer the messages."""
    ledger_concurrency: int = 1
    """Ledger writes in flight at once (boto3 clients are thread-safe); 1 writes one at a time."""
    fynd_concurrency: int = 1
    """Shipment Info reads in flight at once: at most the Fynd client's connection pool."""
    call_concurrency: int = 1
    """Fynd calls of one invocation in flight at once (each with its claims, reads and records);
    the rate limiter, not this, bounds the rate towards Fynd."""


@dataclass
class _Pending:
    """A claimed invoice and the message that answers for it (other copies in the batch are done)."""

    entry: LedgerEntry
    delivery: ReceivedMessage
    in_doubt: bool = False
    """An earlier attempt may have reached Fynd unanswered (`_may_be_at_fynd`)."""
    others: list[ReceivedMessage] = field(default_factory=list)
    """The batch's other copies of the invoice: acknowledged only once it is recorded final."""


@dataclass
class _Pause:
    """The batch's hold after a 429: no call or read of this invocation starts before `until`."""

    until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, until: float) -> None:
        with self._lock:
            self.until = max(self.until, until)


@dataclass
class _Slot:
    """The rate slot a call took before its claims: its first request (a read, or the send)
    starts on it; every later one takes a slot of its own."""

    held: bool
    failure: FyndCallError | None = None
    """What seeking the slot met naming the credential: every request of the call meets it."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self._lock:
            held, self.held = self.held, False
            return held


class Dispatcher:
    def __init__(
        self,
        *,
        ledger: Ledger,
        fynd: Fynd,
        queue: InvoiceQueue,
        policy: CodePolicy,
        settings: DispatchLimits,
        owner: str,
        clock: Callable[[], float],
        limiter: RateLimiter | None = None,
        read_limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`limiter` paces every Fynd request per credential (None: unpaced); `read_limiter`, if
        given, paces the Shipment Info reads instead, apart (keyed `credential#shipment-info`);
        `sleep` waits on `clock`."""
        self._ledger = ledger
        self._fynd = fynd
        self._queue = queue
        self._policy = policy
        self._settings = settings
        self._owner = owner
        self._clock = clock
        self._limiter = limiter
        self._read_limiter = read_limiter
        self._sleep = sleep
        self._pool = _pool(settings.ledger_concurrency, "ledger")
        self._fynd_pool = _pool(settings.fynd_concurrency, "fynd")
        self._call_pool = _pool(settings.call_concurrency, "call")

    def dispatch(self, deliveries: Sequence[ReceivedMessage], seconds_left: Callable[[], float]) -> list[str]:
        """Deliver the batch; return the message ids that must come back (batchItemFailures)."""
        failed: list[str] = []
        copies_of: dict[InvoiceKey, list[ReceivedMessage]] = {}
        for copies in _collapse(deliveries):
            key = copies[0].message.invoice.key
            if key in copies_of:
                # Other content for a key this batch already sends: it comes back after this
                # one is recorded, and its claim decides (superseded, or sent next).
                failed.extend(self._hold_every(copies, 1))
            else:
                copies_of[key] = copies
        # The oldest invoices first: an invoice deferred for time is not last again next batch.
        oldest_first = sorted(copies_of.values(), key=lambda copies: copies[0].message.accepted_at)
        calls = plan_calls(copies[0].message.invoice for copies in oldest_first)
        pause = _Pause()

        def deliver(call: FyndCall) -> list[str]:
            return self._deliver(call, copies_of, seconds_left, pause)

        for failures in self._call_pool.map(deliver, calls) if self._call_pool else map(deliver, calls):
            failed.extend(failures)
        return failed

    def _deliver(
        self,
        planned: FyndCall,
        copies_of: dict[InvoiceKey, list[ReceivedMessage]],
        seconds_left: Callable[[], float],
        pause: _Pause,
    ) -> list[str]:
        """One planned call: claim its invoices, read, send, split, record; the ids that come back."""
        spare = self._time_left(seconds_left) - self._settings.request_seconds
        paused = pause.until - self._clock()
        if spare < 0 or paused > spare:
            # No time for the call (or the batch waits out a 429 longer than that): its messages
            # wait, unclaimed, without spending a receive.
            return self._hold_unclaimed(planned, copies_of, max(paused, 1))
        # The send's rate slot comes before any claim: a call that cannot start in time waits
        # unclaimed (when the pace is booked ahead, claiming first would cost two ledger writes
        # per invoice, in a burst, for nothing; the send stamp costs one per SEND_STAMP_SECONDS).
        keys = [str(invoice.key) for invoice in planned.invoices]
        waited = self._wait_for_start(planned.location_code, spare, pause, keys)
        if waited is not None and not isinstance(waited, FyndCallError):
            return self._hold_unclaimed(planned, copies_of, waited)
        slot = _Slot(waited is None, waited if isinstance(waited, FyndCallError) else None)
        failed: list[str] = []
        pending: dict[InvoiceKey, _Pending] = {}
        copies = [copies_of[invoice.key] for invoice in planned.invoices]
        for failures, claimed in self._each(self._claim, copies):
            failed.extend(failures)
            if claimed is not None:
                pending[claimed.entry.key] = claimed
        invoices = tuple(invoice for invoice in planned.invoices if invoice.key in pending)
        if not invoices:
            return failed
        calls = deque([FyndCall(planned.location_code, planned.invoice_type, invoices)])
        checked: set[InvoiceKey] = set()
        while calls:
            call = calls.popleft()
            decided = self._check_first(call, pending, checked, seconds_left, pause, slot)
            if decided:
                failed.extend(self._settle_each(pending, decided))
                rest = tuple(invoice for invoice in call.invoices if invoice.key not in decided)
                if rest:
                    calls.appendleft(FyndCall(call.location_code, call.invoice_type, rest))
                continue
            answer = self._send_in_time(call, pending, seconds_left, pause, slot)
            if isinstance(answer, FyndCallRefused) and len(call.invoices) > 1:
                calls.extendleft(reversed(_halves(call)))
                continue
            if isinstance(answer, FyndAmbiguous) and self._read_limiter is not None:
                failed.extend(self._read_now(call, answer, pending, seconds_left, pause, slot))
                continue
            failed.extend(self._settle(call, pending, answer))
        return failed

    def _read_now(
        self,
        call: FyndCall,
        answer: FyndAmbiguous,
        pending: dict[InvoiceKey, _Pending],
        seconds_left: Callable[[], float],
        pause: _Pause,
        slot: _Slot,
    ) -> list[str]:
        """A lost answer, with reads on a pace of their own: each order of the call is read now,
        in this invocation, and what a read decides is recorded (invoiced, cancelled, still
        waiting for its confirmation, or a wait for time or a 429), instead of after a back-off
        and then behind every message a backlog queued meanwhile. An order the read would send
        again waits for its retry in doubt, as a lost answer does: a read this soon may race the
        very request whose answer was lost (still at Fynd, applied a moment later), so "not
        invoiced" proves nothing yet, and a send now could be a second one. The reads cost the
        calls' pace nothing; on a shared pace (a read would take a call's slot) the retry reads
        later, as before. The ids that come back."""
        count("ReadAfterLostAnswer", len(call.invoices))
        items = [pending[invoice.key] for invoice in call.invoices]
        for item in items:
            # The lost answer may have applied each: a wait the read records (no time, a 429)
            # must not say that nothing was sent, or the retry would send without a read.
            item.in_doubt = True
        proven: dict[InvoiceKey, Verdict] = {
            item.entry.key: verdict
            for item, verdict in zip(items, self._read_each(items, seconds_left, pause, slot), strict=True)
            if verdict is not None
        }
        failed = self._settle_each(pending, proven) if proven else []
        rest = tuple(invoice for invoice in call.invoices if invoice.key not in proven)
        if rest:
            failed.extend(
                self._settle(FyndCall(call.location_code, call.invoice_type, rest), pending, answer)
            )
        return failed

    def _time_left(self, seconds_left: Callable[[], float]) -> float:
        """The invocation's time a call may still use, the reserve for recording kept back."""
        return min(self._settings.call_budget_seconds, seconds_left() - self._settings.record_reserve_seconds)

    def _budget(
        self, call: FyndCall, pending: dict[InvoiceKey, _Pending], seconds_left: Callable[[], float]
    ) -> float:
        """The time this call may take from now: within the call budget, the invocation's remaining
        time and every claim's lease, less the reserve for recording the outcome. Computed again
        before every send and every read, never carried over."""
        now = self._clock()
        lease_left = min((pending[invoice.key].entry.lease_until or now) - now for invoice in call.invoices)
        return min(self._time_left(seconds_left), lease_left - self._settings.record_reserve_seconds)

    def _send_in_time(
        self,
        call: FyndCall,
        pending: dict[InvoiceKey, _Pending],
        seconds_left: Callable[[], float],
        pause: _Pause,
        slot: _Slot,
    ) -> FyndReceipt | FyndCallError | Verdict:
        """Send the call if a start (the batch's pause, a rate slot) comes while it still has time
        for a whole request; else the deferral every invoice of it records. `slot`: the rate
        slot the call took before its claims, if no read has used it."""
        need = self._settings.request_seconds
        budget = self._budget(call, pending, seconds_left)
        if budget < need:
            return self._deferral(call, 1)
        keys = [str(invoice.key) for invoice in call.invoices]
        waited = self._start(call.location_code, budget - need, pause, keys, slot)
        if waited is not None:
            return waited if isinstance(waited, FyndCallError) else self._deferral(call, waited)
        budget = self._budget(call, pending, seconds_left)
        if budget < need:
            return self._deferral(call, 1)
        return self._send(call, budget, pause)

    def _start(
        self,
        location_code: str | None,
        spare: float,
        pause: _Pause,
        keys: list[str],
        slot: _Slot,
        *,
        read: bool = False,
    ) -> float | FyndCallError | None:
        """`_wait_for_start`, or, for the call's first request after its claims, its slot taken
        before them: unless a 429 has paused the batch since, which a fresh slot waits out. A
        read on a pace of its own leaves the call's slot to the send."""
        if slot.failure is not None:
            return slot.failure
        own_pace = read and self._read_limiter is not None
        if not own_pace and slot.take() and pause.until <= self._clock():
            return None
        return self._wait_for_start(location_code, spare, pause, keys, read=read)

    def _pace(self, location_code: str | None, *, read: bool) -> tuple[RateLimiter | None, str]:
        """The limiter a request waits on and its key there; raises FyndCallError when the
        credential cannot be read."""
        credential = self._fynd.credential_for(location_code)
        if read and self._read_limiter is not None:
            return self._read_limiter, f"{credential}{READ_PACE_SUFFIX}"
        return self._limiter, credential

    def _wait_for_start(
        self, location_code: str | None, spare: float, pause: _Pause, keys: list[str], *, read: bool = False
    ) -> float | FyndCallError | None:
        """Wait (sleep) for the batch's pause and the credential's next rate slot, if both come
        within `spare` seconds: None, go now. Otherwise the seconds until a start is free (the
        caller defers), or the FyndCallError met naming the credential. `keys`: the invoices
        the request is about, for the log."""
        now = self._clock()
        held = pause.until - now
        if held > spare:
            return held
        if held > 0:
            self._sleep(held)
            now, spare = self._clock(), spare - held
        if self._limiter is None and self._read_limiter is None:
            return None
        try:
            limiter, credential = self._pace(location_code, read=read)
            if limiter is None:
                return None
            slot = limiter.acquire(credential, now=now, not_after=now + max(spare, 0))
        except FyndCallError as failure:
            return failure
        except RateLimiterUnavailableError as error:
            # Fail open: a DynamoDB blip must not stop delivery; Fynd's own 429 still holds us.
            count("RateLimiterUnavailable")
            logger.warning(
                "Fynd rate limiter unavailable; sending unpaced",
                extra={"error": str(error), "invoice_keys": keys},
            )
            return None
        if not slot.granted:
            count("RateSlotsMissed")
            return max(slot.at - now, 1)
        if slot.at > now:
            self._sleep(slot.at - now)
        return None

    def _throttled(
        self, location_code: str | None, failure: FyndThrottled, pause: _Pause, *, read: bool = False
    ) -> None:
        """A 429: the rest of the batch, and every dispatcher on the pace it met, wait Retry-After.
        A 429 on a read paced apart holds the read pace only: the calls' pace was not refused."""
        wait = failure.retry_after if failure.retry_after is not None else DEFAULT_THROTTLE_PAUSE_SECONDS
        now = self._clock()
        if not (read and self._read_limiter is not None):
            pause.hold(now + wait)
        if self._limiter is None and self._read_limiter is None:
            return
        try:
            limiter, credential = self._pace(location_code, read=read)
            if limiter is not None:
                limiter.throttled(credential, now=now, retry_after=wait)
        except (FyndCallError, RateLimiterUnavailableError) as error:
            logger.warning("could not slow the Fynd rate limiter", extra={"error": str(error)})

    def _each[T, R](self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`work` on every item: concurrently when ledger_concurrency allows, in order otherwise."""
        return list(self._pool.map(work, items) if self._pool else map(work, items))

    def _claim(self, copies: list[ReceivedMessage]) -> tuple[list[str], _Pending | None]:
        """Claim one invoice for its first copy: the pending claim, or the ids that come back."""
        first = copies[0]
        if len(copies) > 1:
            count("DuplicatesSuppressed", len(copies) - 1, stage="batch")
        now = self._clock()
        try:
            claim = self._ledger.claim(
                first.message,
                message_id=first.message_id,
                owner=self._owner,
                now=now,
                lease_seconds=self._settings.lease_seconds,
            )
        except LedgerUnavailableError:
            # Every copy comes back, not only the first: another may be the holder's own message
            # (as for a back-off below), which acknowledging could delete under its holder.
            wait = self._outage_wait(first)
            return [held for copy in copies for held in self._hold(copy, LEDGER_UNAVAILABLE, wait)], None
        if claim.granted and claim.entry is not None:
            return [], _Pending(claim.entry, first, _may_be_at_fynd(claim.entry), copies[1:])
        return self._refused(copies, claim.entry, claim.refusal, now), None

    def _refused(
        self,
        copies: list[ReceivedMessage],
        entry: LedgerEntry | None,
        refusal: ClaimRefusal | None,
        now: float,
    ) -> list[str]:
        first = copies[0]
        about = {**_about(first, entry), "reason": str(refusal), "status": _status(entry)}
        if entry is not None and refusal is ClaimRefusal.NOT_YET:
            # A copy must not bypass the back-off (or Fynd's Retry-After): back at retryAt. Every
            # copy comes back, not only the first: another may be the holder's own message, and
            # acknowledging it would delete it under the worker that has it in hand again.
            logger.info("invoice waits for its next attempt", extra=about)
            return self._hold_every(copies, (entry.retry_at or now) - now + 1)
        if entry is not None and refusal is ClaimRefusal.BUSY:
            # No copy of an invoice another worker holds is acknowledged: each comes back when
            # the lease has run out, and meets the outcome then. The holder's own message,
            # delivered twice, may be the only message the invoice has; and any other copy may
            # be too, for the holder's message may be gone: SQS delivers at least once, and
            # another delivery of it may have been acknowledged by a worker that claimed with
            # another copy. A holder that then dies would leave the invoice with no message.
            own = any(copy.message_id == entry.claim_message_id for copy in copies)
            logger.info(
                "holder's own message delivered twice; it waits for the lease"
                if own
                else "invoice held by another worker; the copy waits for the lease",
                extra=about,
            )
            return self._hold_every(copies, (entry.lease_until or now) - now + 1)
        # FINAL and SUPERSEDED copies have nothing left to do.
        count("DuplicatesSuppressed", len(copies), stage="ledger")
        logger.info("invoice not sent again", extra=about)
        return []

    def _check_first(
        self,
        call: FyndCall,
        pending: dict[InvoiceKey, _Pending],
        checked: set[InvoiceKey],
        seconds_left: Callable[[], float],
        pause: _Pause,
        slot: _Slot,
    ) -> dict[InvoiceKey, Verdict]:
        """Read Shipment Info (once per invocation) for invoices an earlier attempt may have
        delivered unanswered; the verdicts it decides without a send (the rest of the call is
        sent as it would have been). An order Fynd answered IN403, with no doubt before it, is
        not read: it goes in the call, where it costs Fynd a place, not a request of its own.
        Reads go in waves of `fynd_concurrency`, each with a budget computed when it starts."""
        items = [
            pending[invoice.key]
            for invoice in call.invoices
            if invoice.key not in checked and pending[invoice.key].in_doubt
        ]
        checked.update(item.entry.key for item in items)
        decided: dict[InvoiceKey, Verdict] = {}
        for item, verdict in zip(items, self._read_each(items, seconds_left, pause, slot), strict=True):
            if verdict is not None:
                decided[item.entry.key] = verdict
            elif _waiting(item.entry) is False:
                count("ResentAfterCheck")
        return decided

    def _read_each(
        self, items: list[_Pending], seconds_left: Callable[[], float], pause: _Pause, slot: _Slot
    ) -> list[Verdict | None]:
        """`_read` for every item, in waves of `fynd_concurrency`."""

        def read(item: _Pending) -> Verdict | None:
            return self._read(item, seconds_left, pause, slot)

        return list(self._fynd_pool.map(read, items) if self._fynd_pool else map(read, items))

    def _read_budget(self, item: _Pending, seconds_left: Callable[[], float]) -> float:
        """What one read may take from now: the time and lease left after a whole request for the send."""
        now = self._clock()
        left = min(
            self._time_left(seconds_left),
            (item.entry.lease_until or now) - now - self._settings.record_reserve_seconds,
        )
        return min(self._settings.request_seconds, left - self._settings.request_seconds)

    def _read(
        self, item: _Pending, seconds_left: Callable[[], float], pause: _Pause, slot: _Slot
    ) -> Verdict | None:
        """The verdict one read decides; None: send as without the read."""
        invoice = item.delivery.message.invoice
        budget = self._read_budget(item, seconds_left)
        if budget < MIN_READ_SECONDS:
            return self._deferral_of(1)
        waited = self._start(
            invoice.locationCode, budget - MIN_READ_SECONDS, pause, [str(invoice.key)], slot, read=True
        )
        if isinstance(waited, FyndCallError):
            return None
        if waited is not None:
            return self._deferral_of(waited)
        budget = self._read_budget(item, seconds_left)
        if budget < MIN_READ_SECONDS:
            return self._deferral_of(1)
        try:
            info = self._fynd.shipment_info(invoice.orderId, invoice.locationCode, time_budget_seconds=budget)
        except FyndThrottled as throttled:
            # A 429 on a read backs off like one on a call; on the calls' pace it holds the batch
            # too (nothing is sent meanwhile), on a read pace of its own only the reads.
            self._throttled(invoice.locationCode, throttled, pause, read=True)
            return self._policy.for_call_failure(throttled, receive_count=item.delivery.receive_count)
        except FyndCallError as failure:
            logger.info(
                "Shipment Info unavailable",
                extra={**_about(item.delivery, item.entry), "reason": failure.reason, "error": str(failure)},
            )
            return None
        state = classify_shipment(info, invoice.invoiceType)
        if state.proves_not_invoiced:
            item.in_doubt = False  # no earlier attempt was applied
        verdict = self._policy.for_shipment(
            state,
            waiting=_waiting(item.entry),
            attempt=item.entry.attempts,
            accepted_at=item.entry.waiting_since,
            now=self._clock(),
        )
        logger.info(
            "Shipment Info read",
            extra={
                **_about(item.delivery, item.entry),
                "shipment_state": state,
                "decided": "send" if verdict is None else type(verdict).__name__,
            },
        )
        if state is ShipmentState.INVOICED:
            count("VerifiedWithoutResend")
        return verdict

    def _send(self, call: FyndCall, budget: float, pause: _Pause) -> FyndReceipt | FyndCallError:
        try:
            return self._fynd.update_invoices(call, time_budget_seconds=budget)
        except FyndCallError as failure:
            logger.warning(
                "Fynd call failed",
                extra={
                    "reason": failure.reason,
                    "status": failure.status,
                    "orders": len(call.invoices),
                    "invoice_keys": [str(invoice.key) for invoice in call.invoices],
                },
            )
            if isinstance(failure, FyndThrottled):
                self._throttled(call.location_code, failure, pause)
            return failure

    def _deferral(self, call: FyndCall, wait: float) -> RetryLater:
        """Not enough time (or no rate slot in time) for this call: the claims are given back and
        the messages wait, queued afresh, without spending a receive."""
        logger.warning(
            "no time left for a Fynd call",
            extra={"invoice_keys": [str(i.key) for i in call.invoices], "retry_in_s": wait},
        )
        return self._deferral_of(wait)

    @staticmethod
    def _deferral_of(wait: float) -> RetryLater:
        return RetryLater(
            OUT_OF_TIME, "invocation ran out of time", max(1, int(wait + 0.999)), nothing_sent=True
        )

    def _hold_unclaimed(
        self, call: FyndCall, copies_of: dict[InvoiceKey, list[ReceivedMessage]], wait: float
    ) -> list[str]:
        """A planned call with no time left, before any claim: every copy waits (afresh, so no
        receive is spent; none is acknowledged, as in `_keep`). Nothing is written but each
        entry's send stamp, first (`_stamp`)."""
        logger.warning(
            "no time left for a Fynd call; not claimed",
            extra={"invoice_keys": [str(i.key) for i in call.invoices]},
        )
        self._each(self._stamp, [copies_of[invoice.key][0] for invoice in call.invoices])
        return [
            message_id
            for invoice in call.invoices
            for copy in copies_of[invoice.key]
            for message_id in self._hold(copy, OUT_OF_TIME, wait)
        ]

    def _stamp(self, delivery: ReceivedMessage) -> None:
        """Stamp the entry before its fresh copy is sent (Ledger.stamp_sent): the reconciler's
        premise is that every message carrying an entry was sent before the entry's latest
        write, or within one invocation after it, and a deferral before the claim writes nothing
        else. One stamp covers SEND_STAMP_SECONDS of deferrals. Best effort: a stamp not written
        costs at most one useless copy from the reconciler, so the copy is sent regardless."""
        now = self._clock()
        try:
            self._ledger.stamp_sent(delivery.message, now=now, until=now + SEND_STAMP_SECONDS)
        except LedgerUnavailableError as error:
            count("SendStampFailed")
            logger.warning(
                "could not stamp the entry before queueing it afresh; the copy goes regardless",
                extra={**_about(delivery, None), "error": str(error)},
            )

    def _settle(
        self,
        call: FyndCall,
        pending: dict[InvoiceKey, _Pending],
        answer: FyndReceipt | FyndCallError | Verdict,
    ) -> list[str]:
        ack_id = answer.ack_id if isinstance(answer, FyndReceipt) else None
        if isinstance(answer, FyndReceipt):
            for invoice in call.invoices:
                # Fynd answered for the order itself: whatever an earlier attempt did, the
                # answer says it (IN453 if it was applied), so no doubt is left for the next.
                pending[invoice.key].in_doubt = False
        verdicts = {invoice.key: self._verdict(answer, pending[invoice.key]) for invoice in call.invoices}
        return self._settle_each(pending, verdicts, ack_id)

    def _settle_each(
        self,
        pending: dict[InvoiceKey, _Pending],
        verdicts: dict[InvoiceKey, Verdict],
        ack_id: str | None = None,
    ) -> list[str]:
        """Record each verdict (concurrently) and answer its message; the ids that come back."""

        def settle(item: _Pending) -> list[str]:
            verdict = verdicts[item.entry.key]
            if isinstance(verdict, RetryLater) and verdict.nothing_sent and item.in_doubt:
                # Nothing left this time, but an earlier attempt may still be at Fynd unanswered.
                verdict = replace(verdict, nothing_sent=False)
            try:
                held = self._ledger.record(
                    item.entry.key, verdict, owner=self._owner, now=self._clock(), ack_id=ack_id
                )
            except LedgerUnavailableError:
                # Fynd's answer is not recorded and our claim stands. The message must not
                # return before the lease runs out (a copy meeting a live lease is dropped);
                # then the retry meets IN453 (invoiced) or the same refusal again.
                lease_left = (item.entry.lease_until or 0) - self._clock()
                wait = max(lease_left + 1, self._outage_wait(item.delivery))
                return [*self._hold(item.delivery, LEDGER_UNAVAILABLE, wait), *self._keep(item.others, wait)]
            if not held:
                return [*self._lease_lost(item, verdict), *self._keep(item.others, 1)]
            if isinstance(verdict, RetryLater) and not is_parked_wait(verdict.delay_seconds, verdict.reason):
                return [*self._answer(item, verdict), *self._keep(item.others, verdict.delay_seconds)]
            # Final, or parked: the ledger answers for the invoice now (the reconciler queues a
            # parked one when due), so the other copies may go.
            return self._answer(item, verdict)

        settled = self._each(settle, [pending[key] for key in verdicts])
        return [message_id for failures in settled for message_id in failures]

    def _verdict(self, answer: FyndReceipt | FyndCallError | Verdict, item: _Pending) -> Verdict:
        if isinstance(answer, FyndCallRefused):
            return self._policy.refused_alone(answer)
        if isinstance(answer, FyndCallError):
            return self._policy.for_call_failure(answer, receive_count=item.delivery.receive_count)
        if isinstance(answer, FyndReceipt):
            return self._policy.for_order(
                answer.error_for(item.entry.key.order_id),
                invoice_type=item.entry.key.invoice_type,
                attempt=item.entry.attempts,
                accepted_at=item.entry.waiting_since,
                now=self._clock(),
            )
        return answer

    def _lease_lost(self, item: _Pending, verdict: Verdict) -> list[str]:
        """Another worker took the key after our lease ran out, and records the outcome itself
        (a resend meets IN453). This message is acknowledged only once the entry is final: SQS
        delivers at least once, so that worker may hold this very message, and a delete by our
        older receipt handle may still remove it from under it (a standard queue may), leaving
        the invoice no message if that worker then dies. A retry's message comes back after its
        back-off, any other unfinished one after the new lease, and meets the outcome then."""
        logger.warning(
            "lease lost before the outcome was recorded",
            extra={**_about(item.delivery, item.entry), "verdict": type(verdict).__name__},
        )
        if isinstance(verdict, RetryLater):
            return self._hold(item.delivery, verdict.reason, verdict.delay_seconds)
        try:
            current = self._ledger.get(item.entry.key)
        except LedgerUnavailableError:
            current = None
        if current is not None and current.status.is_final:
            return []
        return self._hold(item.delivery, WAITING, self._settings.lease_seconds + 1)

    def _answer(self, item: _Pending, verdict: Verdict) -> list[str]:
        log = {**_about(item.delivery, item.entry), "attempt": item.entry.attempts}
        match verdict:
            case Invoiced(already=already):
                count("InvoicesInvoiced")
                if already:
                    count("AlreadyInvoiced")
                logger.info("invoice accepted by Fynd", extra={**log, "already_invoiced": already})
                return []
            case Rejected(code=code, message=message):
                count("InvoicesRejected", code=dimension(code))
                logger.error("invoice rejected by Fynd", extra={**log, "code": code, "fynd_message": message})
                return []
            case RetryLater(reason=reason, delay_seconds=delay):
                if is_parked_wait(delay, reason):
                    # Recorded in the PARKED list (relay.adapters.ledger.record): the reconciler
                    # queues it again at retryAt, so the message need not wait in flight.
                    count("Parked", reason=dimension(reason, _OUR_REASONS))
                    logger.info("invoice parked until its next attempt", extra={**log, "retry_in_s": delay})
                    return []
                if reason == TOO_EARLY:
                    # Waiting for Fynd's confirmation is no failure: a fresh copy delayed in SQS,
                    # neither in flight (SQS's in-flight quota) nor spending a receive.
                    return self._hold(item.delivery, reason, delay, requeue_before_last=True, spares=True)
                return self._hold(item.delivery, reason, delay)

    def _keep(self, others: list[ReceivedMessage], wait: float) -> list[str]:
        """The batch's other copies of an invoice left unfinished: kept, never acknowledged. The
        message the claim named may be a stale delivery of one already replaced by a fresh
        copy elsewhere (SQS delivers at least once), so a copy is the invoice's last message
        until the invoice is final. They wait as no failure: a fresh copy each, no receive spent."""
        return self._hold_every(others, wait) if others else []

    def _hold_every(self, copies: list[ReceivedMessage], wait: float) -> list[str]:
        """Every copy of an unfinished invoice comes back after `wait`: none is acknowledged."""
        return [message_id for copy in copies for message_id in self._hold(copy, WAITING, wait)]

    def _hold(
        self,
        delivery: ReceivedMessage,
        reason: str,
        wait: float,
        *,
        requeue_before_last: bool | None = None,
        spares: bool | None = None,
    ) -> list[str]:
        """Let the message come back after `wait` seconds; return the ids for batchItemFailures.

        A message held for no failure (WAITING, OUT_OF_TIME, or `spares`: an early order's
        IN403) is queued afresh with the wait as its delay, so waiting never spends a receive
        nor stays in flight (beyond SQS's 15-minute delay, only before its last receive); an
        early order (IN403) is queued afresh instead of spending its last receives. If that
        send fails, the message comes back.
        """
        delay = max(1, int(wait))
        log = {**_about(delivery, None), "reason": reason, "retry_in_s": delay}
        no_failure = reason in _NO_FAILURE if spares is None else spares
        fresh = no_failure if requeue_before_last is None else requeue_before_last
        spares_a_receive = no_failure and delay <= MAX_SQS_DELAY_SECONDS
        if fresh and (spares_a_receive or delivery.receive_count >= self._settings.max_receive_count - 1):
            try:
                self._queue.send_later(delivery.message, min(delay, MAX_SQS_DELAY_SECONDS))
            except QueueUnavailableError:
                logger.warning("could not queue a fresh copy; the message comes back", extra=log)
            else:
                count("Retries", reason=dimension(reason, _OUR_REASONS))
                logger.info("invoice queued afresh for its next attempt", extra=log)
                return []
        self._queue.change_visibility(delivery.receipt_handle, delay)
        if delivery.receive_count >= self._settings.max_receive_count:
            count("DeadLettered", reason=dimension(reason, _OUR_REASONS))
            logger.error("invoice leaves for the dead-letter queue", extra=log)
            self._mark_dead_lettered(delivery, log)
        else:
            count("Retries", reason=dimension(reason, _OUR_REASONS))
            logger.warning("invoice will be retried", extra=log)
        return [delivery.message_id]

    def _mark_dead_lettered(self, delivery: ReceivedMessage, log: dict[str, object]) -> None:
        """The dead-letter queue is where this invoice ends (until an operator redrives it), so
        the reconciler must not queue it again. Best effort: an entry left unmarked is queued
        again by the reconciler, one copy too many, which the claim handles."""
        try:
            self._ledger.mark_dead_lettered(
                delivery.message, message_id=delivery.message_id, now=self._clock()
            )
        except LedgerUnavailableError:
            logger.warning(
                "could not mark the entry dead-lettered; the reconciler will queue it again", extra=log
            )

    def _outage_wait(self, delivery: ReceivedMessage) -> float:
        return self._policy.outage.delay(delivery.receive_count)


def _pool(workers: int, name: str) -> ThreadPoolExecutor | None:
    """Threads for `workers` calls at once; None runs them one after another, in order."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name) if workers > 1 else None


def _collapse(deliveries: Sequence[ReceivedMessage]) -> list[list[ReceivedMessage]]:
    """Group the batch's messages by (key, content): each group is one invoice to claim."""
    groups: dict[tuple[InvoiceKey, str], list[ReceivedMessage]] = {}
    for delivery in deliveries:
        groups.setdefault((delivery.message.invoice.key, delivery.message.content_hash), []).append(delivery)
    return list(groups.values())


def _may_be_at_fynd(entry: LedgerEntry) -> bool:
    """An earlier attempt may have reached Fynd with its answer lost: only then is a Shipment Info
    read worth its request. Not for a first attempt, nor after one whose recorded error proves
    nothing was sent (429, the request never left, out of time) with none in doubt before it;
    always after a claim taken from IN_PROGRESS (the worker before may have died mid-call)."""
    if entry.attempts <= 1:
        return False
    nothing_sent = entry.last_error is not None and entry.last_error.nothing_sent
    return not (entry.claimed_from is InvoiceStatus.RETRYING and nothing_sent)


def _waiting(entry: LedgerEntry) -> bool:
    """Fynd's last word on the order was IN403, and nothing may have happened since."""
    code = entry.last_error.code if entry.last_error else None
    return code == TOO_EARLY and entry.claimed_from is not InvoiceStatus.IN_PROGRESS


def _halves(call: FyndCall) -> list[FyndCall]:
    middle = len(call.invoices) // 2
    return [
        FyndCall(call.location_code, call.invoice_type, part)
        for part in (call.invoices[:middle], call.invoices[middle:])
    ]


def _about(delivery: ReceivedMessage, entry: LedgerEntry | None) -> dict[str, object]:
    """What every log line about an invoice carries: its key, and the webhook-id of the request
    that accepted it (the ledger's, which the status API shows; else the message's). A batch
    mixes webhooks, so this goes on each line rather than on the Logger."""
    correlation_id = (entry.correlation_id if entry else None) or delivery.message.correlation_id
    return {"invoice_key": str(delivery.message.invoice.key), "correlation_id": correlation_id}


def _status(entry: LedgerEntry | None) -> str | None:
    return str(entry.status) if entry else None
