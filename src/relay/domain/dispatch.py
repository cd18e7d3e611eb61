"""One SQS batch of queued invoices, delivered to Fynd exactly once.

The steps, in order:
1. collapse copies of the same invoice inside the batch (ERPs retry blindly);
2. claim each key in the ledger; final keys are acknowledged, keys another worker holds
   come back after its lease, stale content is dropped;
3. group the claimed invoices into Fynd calls (one location and type, 20 at most);
4. map every order's answer to a verdict and record it;
5. answer the messages: final verdicts are deleted, retries come back after their back-off
   (the message's visibility is changed), and only messages of this batch are ever named.

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
from relay.domain.ports import ClaimRefusal, Fynd, InvoiceQueue, Ledger
from relay.observability import count, logger

MAX_SQS_DELAY_SECONDS = 900


@dataclass(frozen=True)
class DispatchSettings:
    lease_seconds: float
    max_receive_count: int


@dataclass
class _Pending:
    """A claimed invoice and every message of the batch that carries it."""

    entry: LedgerEntry
    deliveries: list[Delivery]

    @property
    def first(self) -> Delivery:
        return self.deliveries[0]


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

    def dispatch(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Deliver the batch; return the message ids that must come back (batchItemFailures)."""
        failed: list[str] = []
        pending: dict[InvoiceKey, _Pending] = {}
        for copies in _collapse(deliveries):
            failed.extend(self._claim(copies, pending))
        for call in plan_calls(item.first.message.invoice for item in pending.values()):
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
            pending[key] = _Pending(claim.entry, copies)
            return []
        about = _about(first, claim.entry)
        if claim.refusal is ClaimRefusal.BUSY and claim.entry is not None:
            # Another worker is sending it right now; look again once its lease has run out.
            wait = int(max(1, (claim.entry.lease_until or 0) - self._clock() + 1))
            self._queue.change_visibility(first.receipt_handle, wait)
            if first.receive_count >= self._settings.max_receive_count:
                # SQS moves it on its next receive; say so, or the DLQ alarm has no explanation.
                count("DeadLettered", reason=str(ClaimRefusal.BUSY))
                logger.error(
                    "invoice leaves for the dead-letter queue",
                    extra={**about, "reason": str(ClaimRefusal.BUSY)},
                )
            else:
                logger.info("invoice held by another worker", extra={**about, "retry_in_s": wait})
            return [first.message_id]
        count("DuplicatesSuppressed", len(copies), stage="ledger")
        logger.info(
            "invoice not sent again",
            extra={**about, "reason": str(claim.refusal), "status": _status(claim.entry)},
        )
        return []

    def _deliver(self, call: FyndCall, pending: dict[InvoiceKey, _Pending]) -> list[str]:
        try:
            receipt: FyndReceipt | FyndCallError = self._fynd.update_invoices(call)
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
        failed: list[str] = []
        for invoice in call.invoices:
            item = pending[invoice.key]
            verdict = self._verdict(receipt, item)
            ack_id = receipt.ack_id if isinstance(receipt, FyndReceipt) else None
            self._ledger.record(invoice.key, verdict, owner=self._owner, now=self._clock(), ack_id=ack_id)
            failed.extend(self._answer(item, verdict))
        return failed

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
        log = {**_about(item.first, item.entry), "attempt": item.entry.attempts}
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
        first = item.first
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
