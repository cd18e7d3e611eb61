"""Queue a REJECTED invoice again, unchanged, once its cause is fixed (an order confirmed late,
a location's credentials corrected), recording who did it, when and why.

The invoice's content comes from the body item ingest keeps beside the ledger entry
(`pk = "body#<orderId>#<invoiceType>#<contentHash>"`, attribute `body`: the queued message), read with
InvoiceLedger.body, as the reconciler reads it. It is
replayed only if that content is the one the rejection was about (same content hash): an
invoice the ERP has corrected since is the ERP's to send. The ledger moves first
(InvoiceLedger.replay, conditional), then the message is queued; if queueing fails the
entry is QUEUED with no message, which the reconciler requeues from the same body item.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relay.adapters.ledger import InvoiceLedger
from relay.adapters.queue import SqsInvoiceQueue
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus


class Result(StrEnum):
    REPLAYED = "replayed"
    WOULD_REPLAY = "would replay"
    NOT_FOUND = "not found"
    NOT_REJECTED = "not rejected"
    NO_BODY = "content not stored"
    CHANGED = "changed since"


@dataclass(frozen=True)
class ReplayOutcome:
    key: InvoiceKey
    result: Result
    detail: str
    previous_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.result in (Result.REPLAYED, Result.WOULD_REPLAY)

    def as_dict(self) -> dict[str, Any]:
        return {
            "orderId": self.key.order_id,
            "invoiceType": self.key.invoice_type,
            "result": self.result.value,
            "previousCode": self.previous_code,
            "detail": self.detail,
        }


class Replayer:
    def __init__(self, ledger: InvoiceLedger, queue: SqsInvoiceQueue) -> None:
        self._ledger = ledger
        self._queue = queue

    def replay_all(
        self, keys: Iterable[InvoiceKey], *, by: str, reason: str, now: float, dry_run: bool
    ) -> list[ReplayOutcome]:
        return [self.replay(key, by=by, reason=reason, now=now, dry_run=dry_run) for key in keys]

    def replay(self, key: InvoiceKey, *, by: str, reason: str, now: float, dry_run: bool) -> ReplayOutcome:
        entry = self._ledger.get(key)
        if entry is None:
            return ReplayOutcome(key, Result.NOT_FOUND, "the relay never accepted this invoice")
        code = entry.last_error.code if entry.last_error else None
        if entry.status is not InvoiceStatus.REJECTED:
            return ReplayOutcome(key, Result.NOT_REJECTED, f"it is {entry.status}; only REJECTED is replayed")
        message = self._ledger.body(key)
        if message is None:
            return ReplayOutcome(
                key,
                Result.NO_BODY,
                "its content is not stored (accepted before the relay kept it, or expired): resend it from the ERP",
                code,
            )
        if message.content_hash != entry.content_hash:
            return ReplayOutcome(key, Result.CHANGED, "the stored content is not the rejected one", code)
        if dry_run:
            return ReplayOutcome(key, Result.WOULD_REPLAY, f"would queue it again (was {code})", code)
        if self._ledger.replay(entry, by=by, reason=reason, now=now) is None:
            return ReplayOutcome(key, Result.CHANGED, "the entry changed while replaying; look again", code)
        self._queue.send([message.model_copy(update={"accepted_at": now})])
        return ReplayOutcome(key, Result.REPLAYED, f"queued again (was {code})", code)
