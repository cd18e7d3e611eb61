"""One SQS batch of queued invoices, delivered to Fynd exactly once.

The steps, in order:
1. collapse copies of the same invoice inside the batch (ERPs retry blindly);
2. claim each key in the ledger; copies of final keys, of keys another worker is sending
   right now, and of stale content are acknowledged (the holder's own message stays on the
   queue until the invoice is final, so dropping a copy never loses an invoice);
3. group the claimed invoices into Fynd calls (one location and type, 20 at most);
4. map every order's answer to a verdict and record it;
5. answer the messages: final verdicts are deleted, retries come back after their back-off
   (the message's visibility is changed), and only messages of this batch are ever named.

Fynd calls are made only while the invocation has time for a whole call (connect and read
timeouts); invoices whose call would not fit come back at once for the next invocation,
so a slow Fynd never makes the function time out with a batch half recorded.

A ledger that cannot be reached fails only the messages it touched, never the whole batch.

One invariant makes dropping copies safe: a message whose invoice this worker has claimed
never becomes visible again before the claim's lease runs out. The lease (LEASE_SECONDS)
is shorter than the queue's visibility timeout, and every early return below either
releases the claim first (records RETRYING) or waits out the lease.

An IN403 order may wait up to a day for confirmation, far longer than maxReceiveCount
receives would last: before its last receive it is queued afresh (a new message starts
at receive count 1) so it is never dead-lettered for being early.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.domain.batching import plan_calls
from relay.domain.delivery import FyndCall, FyndCallError, FyndReceipt
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import LedgerEntry
from relay.domain.messages import Delivery
from relay.domain.policy import TOO_EARLY, CodePolicy, Invoiced, Rejected, RetryLater, Verdict
from relay.domain.ports import Fynd, InvoiceQueue, Ledger, LedgerUnavailableError
from relay.observability import count, logger

MAX_SQS_DELAY_SECONDS = 900


OUT_OF_TIME = "out_of_time"
LEDGER_UNAVAILABLE = "ledger_unavailable"


@dataclass(frozen=True)
class DispatchSettings:
    lease_seconds: float
    max_receive_count: int
    call_budget_seconds: float
    """The longest one Fynd call can take (connect + read timeouts, plus a margin)."""
    retry_soon_seconds: int = 5


@dataclass
class _Pending:
    """A claimed invoice and the message that answers for it (other copies in the batch are done)."""

    entry: LedgerEntry
    delivery: Delivery


class Dispatcher:
    def __init__(
        self,
        *,
        ledger: Ledger,
        fynd: Fynd,
        queue: InvoiceQueue,
        policy: CodePolicy,
        settings: DispatchSettings,
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

    def dispatch(self, deliveries: Sequence[Delivery], seconds_left: Callable[[], float]) -> list[str]:
        """Deliver the batch; return the message ids that must come back (batchItemFailures)."""
        failed: list[str] = []
        pending: dict[InvoiceKey, _Pending] = {}
        for copies in _collapse(deliveries):
            try:
                failed.extend(self._claim(copies, pending))
            except LedgerUnavailableError:
                failed.extend(self._retry_soon(copies[0], LEDGER_UNAVAILABLE))
        for call in plan_calls(item.delivery.message.invoice for item in pending.values()):
            if seconds_left() < self._settings.call_budget_seconds:
                failed.extend(self._defer(call, pending))
            else:
                failed.extend(self._deliver(call, pending))
        return failed

    def _claim(self, copies: list[Delivery], pending: dict[InvoiceKey, _Pending]) -> list[str]:
        first = copies[0]
        key = first.message.invoice.key
        if len(copies) > 1:
            count("DuplicatesSuppressed", len(copies) - 1, stage="batch")
        claim = self._ledger.claim(
            first.message,
            owner=self._owner,
            now=self._clock(),
            lease_seconds=self._settings.lease_seconds,
        )
        if claim.granted and claim.entry is not None:
            pending[key] = _Pending(claim.entry, first)
            return []
        about = _about(first, claim.entry)
        # BUSY: another worker is sending it now, and its own message stays until the invoice
        # is final, so this copy can go. FINAL and SUPERSEDED copies have nothing left to do.
        count("DuplicatesSuppressed", len(copies), stage="ledger")
        logger.info(
            "invoice not sent again",
            extra={**about, "reason": str(claim.refusal), "status": _status(claim.entry)},
        )
        return []

    def _deliver(self, call: FyndCall, pending: dict[InvoiceKey, _Pending]) -> list[str]:
        try:
            receipt: FyndReceipt | FyndCallError = self._fynd.update_invoices(
                call, time_budget_seconds=self._settings.call_budget_seconds
            )
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
            receipt = failure
        ack_id = receipt.ack_id if isinstance(receipt, FyndReceipt) else None
        return self._settle(call, pending, lambda item: self._verdict(receipt, item), ack_id)

    def _defer(self, call: FyndCall, pending: dict[InvoiceKey, _Pending]) -> list[str]:
        """Not enough time left for this call: give the claims back and let the messages return."""
        logger.warning(
            "no time left for a Fynd call", extra={"invoice_keys": [str(i.key) for i in call.invoices]}
        )
        wait = self._settings.retry_soon_seconds
        return self._settle(
            call, pending, lambda _: RetryLater(OUT_OF_TIME, "invocation ran out of time", wait), None
        )

    def _settle(
        self,
        call: FyndCall,
        pending: dict[InvoiceKey, _Pending],
        verdict_for: Callable[[_Pending], Verdict],
        ack_id: str | None,
    ) -> list[str]:
        failed: list[str] = []
        for invoice in call.invoices:
            item = pending[invoice.key]
            verdict = verdict_for(item)
            try:
                self._ledger.record(invoice.key, verdict, owner=self._owner, now=self._clock(), ack_id=ack_id)
            except LedgerUnavailableError:
                # Fynd's answer is not recorded and our claim stands. The message must not
                # return before the lease runs out (a copy meeting a live lease is dropped);
                # then the retry meets IN453 (invoiced) or the same refusal again.
                lease_left = (item.entry.lease_until or 0) - self._clock()
                failed.extend(self._retry_soon(item.delivery, LEDGER_UNAVAILABLE, after=lease_left + 1))
                continue
            failed.extend(self._answer(item, verdict))
        return failed

    def _retry_soon(self, delivery: Delivery, reason: str, after: float = 0) -> list[str]:
        wait = int(max(self._settings.retry_soon_seconds, after))
        count("Retries", reason=reason)
        logger.warning(
            "invoice will be retried", extra={**_about(delivery, None), "reason": reason, "retry_in_s": wait}
        )
        self._queue.change_visibility(delivery.receipt_handle, wait)
        return [delivery.message_id]

    def _verdict(self, receipt: FyndReceipt | FyndCallError, item: _Pending) -> Verdict:
        attempt = item.entry.attempts
        if isinstance(receipt, FyndCallError):
            return self._policy.for_call_failure(receipt, attempt=attempt)
        return self._policy.for_order(
            receipt.error_for(item.entry.key.order_id),
            attempt=attempt,
            accepted_at=item.entry.accepted_at,
            now=self._clock(),
        )

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
                count("InvoicesRejected", code=code)
                logger.error("invoice rejected by Fynd", extra={**log, "code": code, "fynd_message": message})
                return []
            case RetryLater(reason=reason, delay_seconds=delay):
                return self._retry(item, reason, delay, log)

    def _retry(self, item: _Pending, reason: str, delay: int, log: dict[str, object]) -> list[str]:
        first = item.delivery
        last_receive = first.receive_count >= self._settings.max_receive_count
        if reason == TOO_EARLY and first.receive_count >= self._settings.max_receive_count - 1:
            # Queue a fresh copy instead of spending the last receives: early is not broken.
            self._queue.send_later(first.message, min(delay, MAX_SQS_DELAY_SECONDS))
            count("Retries", reason=reason)
            logger.info("invoice requeued until its order is confirmed", extra={**log, "retry_in_s": delay})
            return []
        self._queue.change_visibility(first.receipt_handle, delay)
        if last_receive:
            count("DeadLettered", reason=reason)
            logger.error("invoice leaves for the dead-letter queue", extra={**log, "reason": reason})
        else:
            count("Retries", reason=reason)
            logger.warning("invoice will be retried", extra={**log, "reason": reason, "retry_in_s": delay})
        return [first.message_id]


def _collapse(deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
    """Group the batch's messages by (key, content): each group is one invoice to claim."""
    groups: dict[tuple[InvoiceKey, str], list[Delivery]] = {}
    for delivery in deliveries:
        groups.setdefault((delivery.message.invoice.key, delivery.message.content_hash), []).append(delivery)
    return list(groups.values())


def _about(delivery: Delivery, entry: LedgerEntry | None) -> dict[str, object]:
    """What every log line about an invoice carries: its key, and the webhook-id of the request
    that accepted it (the ledger's, which the status API shows; else the message's). A batch
    mixes webhooks, so this goes on each line rather than on the Logger."""
    correlation_id = (entry.correlation_id if entry else None) or delivery.message.correlation_id
    return {"invoice_key": str(delivery.message.invoice.key), "correlation_id": correlation_id}


def _status(entry: LedgerEntry | None) -> str | None:
    return str(entry.status) if entry else None
