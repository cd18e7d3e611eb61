"""The message ingest puts on the invoice queue, and one received copy of it."""

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from relay.domain.invoice import Invoice


class QueuedInvoice(BaseModel):
    """An accepted invoice on its way to Fynd. `content_hash` ties it to its ledger entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    invoice: Invoice
    content_hash: str
    accepted_at: float
    correlation_id: str | None = None

    def to_body(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_body(cls, body: str) -> "QueuedInvoice":
        return cls.model_validate_json(body)


@dataclass(frozen=True)
class Delivery:
    """One SQS record of a dispatcher batch."""

    message_id: str
    receipt_handle: str
    receive_count: int
    message: QueuedInvoice
