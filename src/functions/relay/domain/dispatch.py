"""One SQS batch of queued invoices, delivered to Fynd exactly once.

The steps, in order:
1. collapse copies of the same invoice inside the batch (ERPs retry blindly);
2. claim each key in the ledger, naming the message that claims it. Copies of final keys and
   of stale content are acknowledged. A copy of a key another worker holds comes back after
   the lease, whether or not it is the holder's own message delivered twice (SQS delivers at
   least once, so the holder's message may already have been acknowledged by another worker):
   an invoice never loses its last message while it is unfinished. Every copy of a key
   waiting out its back-off (RETRYING before retryAt) comes back at retryAt;
3. group the claimed invoices into Fynd calls (one location and type, 20 at most, a byte cap);
4. before sending an invoice again, read its Shipment Info (an earlier attempt may have reached
   Fynd with its answer lost, or met IN403): proof that it is invoiced records it with no second send; an
   order still waiting for confirmation keeps waiting without a send (relay.domain.policy);
5. map every order's answer to a verdict and record it. A whole-call 4xx (not 401/403/429)
   splits the call in halves, down to single invoices; one refused alone is rejected;
6. answer the messages: final verdicts are deleted, retries come back after their back-off
   (the message's visibility is changed), long waits are parked in the ledger (the message is
   deleted and the reconciler queues the invoice again when due), and only messages of this
   batch are ever named.

Rules that keep the promises:
- Once a Fynd call has returned, nothing raises out of `dispatch`: every outcome is recorded,
  or its message is held back until its lease ends (then the retry meets IN453, or the same
  refusal). A failed requeue returns the message instead of raising.
- A Fynd call starts only when the invocation has time for it, and gets one total time budget
  (token, call, one refresh) that leaves room to record its outcome; the rest come back at once.
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
  receives would last: before its last receive it is queued afresh (a new message starts
  at receive count 1), and so is a message held back for a reason that is no failure.
- A long wait (an IN403 back-off from 5 min, any wait past SQS's longest delay of 15 min) is
  parked, not held: the record put the entry in the ledger's PARKED list at retryAt, so its
  message is acknowledged and the reconciler queues the invoice again when it is due
  (relay.domain.reconcile). A held message would count against SQS's in-flight quota (about
  120,000 per queue) for the whole wait. Only a recorded verdict parks: a lost lease holds.
- A message held on its last receive leaves for the dead-letter queue, a terminal state: its
  entry is marked (`mark_dead_lettered`) so the reconciler does not queue it again; an
  operator's redrive brings it back, and its next claim clears the mark.
"""

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError
from relay.domain.fynd import FyndCall, FyndCallError, FyndCallRefused, FyndReceipt, FyndThrottled, plan_calls
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import ClaimRefusal, InvoiceStatus, LedgerEntry, is_parked_wait
from relay.domain.messages import ReceivedMessage
from relay.domain.policy import TOO_EARLY, CodePolicy, Invoiced, Rejected, RetryLater, Verdict, dimension
from relay.domain.ports import Fynd, InvoiceQueue, Ledger
from relay.domain.shipment import ShipmentState, classify_shipment
from relay.observability import count, logger

MAX_SQS_DELAY_SECONDS = 900

OUT_OF_TIME = "out_of_time"
LEDGER_UNAVAILABLE = "ledger_unavailable"
QUEUE_UNAVAILABLE = "queue_unavailable"
WAITING = "waiting"
"""Held back for no failure: the key's lease or back-off has not run out yet."""
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


@dataclass
class _Pending:
    """A claimed invoice and the message that answers for it (other copies in the batch are done)."""

    entry: LedgerEntry
    delivery: ReceivedMessage


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
    ) -> None:
        self._ledger = ledger
        self._fynd = fynd
        self._queue = queue
        self._policy = policy
        self._settings = settings
        self._owner = owner
        self._clock = clock
        self._pool = _pool(settings.ledger_concurrency, "ledger")
        self._fynd_pool = _pool(settings.fynd_concurrency, "fynd")

    def dispatch(self, deliveries: Sequence[ReceivedMessage], seconds_left: Callable[[], float]) -> list[str]:
        """Deliver the batch; return the message ids that must come back (batchItemFailures)."""
        failed: list[str] = []
        pending: dict[InvoiceKey, _Pending] = {}
        for failures, claimed in self._each(self._claim, _collapse(deliveries)):
            failed.extend(failures)
            if claimed is not None:
                pending[claimed.entry.key] = claimed
        calls = deque(plan_calls(item.delivery.message.invoice for item in pending.values()))
        checked: set[InvoiceKey] = set()
        while calls:
            call = calls.popleft()
            budget = self._budget(call, pending, seconds_left())
            if budget < self._settings.request_seconds:
                failed.extend(self._defer(call, pending))
                continue
            decided = self._check_first(call, pending, budget, checked)
            if decided:
                failed.extend(self._settle_each(pending, decided))
                rest = tuple(invoice for invoice in call.invoices if invoice.key not in decided)
                if rest:
                    calls.appendleft(FyndCall(call.location_code, call.invoice_type, rest))
                continue
            answer = self._send(call, budget)
            if isinstance(answer, FyndCallRefused) and len(call.invoices) > 1:
                calls.extendleft(reversed(_halves(call)))
                continue
            failed.extend(self._settle(call, pending, answer))
        return failed

    def _budget(self, call: FyndCall, pending: dict[InvoiceKey, _Pending], seconds_left: float) -> float:
        """The time this call may take: within the call budget, the invocation's remaining time
        and every claim's lease, less the reserve for recording the outcome."""
        now = self._clock()
        lease_left = min((pending[invoice.key].entry.lease_until or now) - now for invoice in call.invoices)
        reserve = self._settings.record_reserve_seconds
        return min(self._settings.call_budget_seconds, seconds_left - reserve, lease_left - reserve)

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
            return self._hold(first, LEDGER_UNAVAILABLE, self._outage_wait(first)), None
        if claim.granted and claim.entry is not None:
            return [], _Pending(claim.entry, first)
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
        self, call: FyndCall, pending: dict[InvoiceKey, _Pending], budget: float, checked: set[InvoiceKey]
    ) -> dict[InvoiceKey, Verdict]:
        """Read Shipment Info (once per invocation) for invoices sent before; the verdicts it
        decides without a send (the rest of the call is sent as it would have been)."""
        items = [
            pending[invoice.key]
            for invoice in call.invoices
            if invoice.key not in checked and pending[invoice.key].entry.attempts > 1
        ]
        checked.update(item.entry.key for item in items)
        decided: dict[InvoiceKey, Verdict] = {}
        read = partial(self._read, budget=budget)
        reads = self._fynd_pool.map(read, items) if self._fynd_pool else map(read, items)
        for item, verdict in zip(items, reads, strict=True):
            if verdict is not None:
                decided[item.entry.key] = verdict
            elif _waiting(item.entry) is False:
                count("ResentAfterCheck")
        return decided

    def _read(self, item: _Pending, budget: float) -> Verdict | None:
        """The verdict one read decides; None: send as without the read."""
        invoice = item.delivery.message.invoice
        try:
            info = self._fynd.shipment_info(invoice.orderId, invoice.locationCode, time_budget_seconds=budget)
        except FyndThrottled as throttled:
            # A 429 on a read backs off like one on a call: nothing is sent meanwhile.
            return self._policy.for_call_failure(throttled, receive_count=item.delivery.receive_count)
        except FyndCallError as failure:
            logger.info(
                "Shipment Info unavailable",
                extra={**_about(item.delivery, item.entry), "reason": failure.reason, "error": str(failure)},
            )
            return None
        state = classify_shipment(info, invoice.invoiceType)
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

    def _send(self, call: FyndCall, budget: float) -> FyndReceipt | FyndCallError:
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
            return failure

    def _defer(self, call: FyndCall, pending: dict[InvoiceKey, _Pending]) -> list[str]:
        """Not enough time left for this call: give the claims back and let the messages return."""
        logger.warning(
            "no time left for a Fynd call", extra={"invoice_keys": [str(i.key) for i in call.invoices]}
        )
        verdict = RetryLater(OUT_OF_TIME, "invocation ran out of time", 1)
        return self._settle(call, pending, verdict)

    def _settle(
        self,
        call: FyndCall,
        pending: dict[InvoiceKey, _Pending],
        answer: FyndReceipt | FyndCallError | Verdict,
    ) -> list[str]:
        ack_id = answer.ack_id if isinstance(answer, FyndReceipt) else None
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
                return self._hold(item.delivery, LEDGER_UNAVAILABLE, wait)
            if not held:
                return self._lease_lost(item, verdict)
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
                attempt=item.entry.attempts,
                accepted_at=item.entry.waiting_since,
                now=self._clock(),
            )
        return answer

    def _lease_lost(self, item: _Pending, verdict: Verdict) -> list[str]:
        """Another worker took the key after our lease ran out; it holds its own message and will
        record the outcome itself (a resend meets IN453). Only a retry keeps this message."""
        logger.warning(
            "lease lost before the outcome was recorded",
            extra={**_about(item.delivery, item.entry), "verdict": type(verdict).__name__},
        )
        if isinstance(verdict, RetryLater):
            return self._hold(item.delivery, verdict.reason, verdict.delay_seconds)
        return []

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
                    return self._hold(item.delivery, reason, delay, requeue_before_last=True)
                return self._hold(item.delivery, reason, delay)

    def _hold_every(self, copies: list[ReceivedMessage], wait: float) -> list[str]:
        """Every copy of an unfinished invoice comes back after `wait`: none is acknowledged."""
        return [message_id for copy in copies for message_id in self._hold(copy, WAITING, wait)]

    def _hold(
        self, delivery: ReceivedMessage, reason: str, wait: float, *, requeue_before_last: bool | None = None
    ) -> list[str]:
        """Let the message come back after `wait` seconds; return the ids for batchItemFailures.

        A message held for no failure (WAITING), or an early order (IN403), is queued afresh
        instead of spending its last receives; if that send fails, the message comes back.
        """
        delay = max(1, int(wait))
        log = {**_about(delivery, None), "reason": reason, "retry_in_s": delay}
        fresh = reason == WAITING if requeue_before_last is None else requeue_before_last
        if fresh and delivery.receive_count >= self._settings.max_receive_count - 1:
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
