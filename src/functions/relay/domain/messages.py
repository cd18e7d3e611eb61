"""The message ingest puts on the invoice queue, and one received copy of it.

The body is versioned (`schema_version`) so a deploy can change it while messages of the
previous format are still in flight:
- 1: the first format, without `schema_version` (read as 1);
- 2: adds `schema_version`.
A reader ignores fields of the envelope it does not know, so a later format that adds one
is still read by this code during a rolling deploy or a rollback. The invoice inside stays
strict: a field of it we do not know could not be passed on to Fynd faithfully.

The deploy that introduces format 2 is the last one that can meet a strict reader: format-1
code refuses the new field, reports the message as failed, and it returns after its
visibility timeout to the new code (one receive spent, far from maxReceiveCount).

Ingest proves, before it writes the ledger, that each message it is about to queue is read
back as itself (`round_trips`), so nothing is accepted that the dispatcher could not read.
"""

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from relay.domain.invoice import Invoice

MESSAGE_SCHEMA_VERSION = 2
"""The format this code writes."""
MAX_MESSAGE_BYTES = 262_144
"""SQS's limit on one message: body and message attributes together."""
UNCARRIED = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character SQS does not carry: its SendMessage allows only `#x9 | #xA | #xD | #x20-#xD7FF |
#xE000-#xFFFD | #x10000-#x10FFFF` (XML 1.0's characters) in a body or a String attribute and
refuses the rest with InvalidMessageContents (docs/interface.md). U+FFFE, U+FFFF, lone
surrogates and control characters such as U+0001 are outside it."""


def uncarried(text: str) -> str | None:
    """The first character of `text` SQS would refuse, as `U+XXXX`; None when it carries all."""
    found = UNCARRIED.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


class QueuedInvoice(BaseModel):
    """An accepted invoice on its way to Fynd. `content_hash` ties it to its ledger entry."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = MESSAGE_SCHEMA_VERSION
    invoice: Invoice
    content_hash: str
    accepted_at: float
    correlation_id: str | None = None

    def to_body(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_body(cls, body: str) -> "QueuedInvoice":
        """Any format so far; raises pydantic's ValidationError for a body that is none of them."""
        message = cls.model_validate_json(body)
        if "schema_version" not in message.model_fields_set:
            message = message.model_copy(update={"schema_version": 1})
        return message

    def queued_bytes(self) -> int:
        """What the message costs against MAX_MESSAGE_BYTES: body plus the correlation attribute
        (`relay.adapters.queue` sends the id as a String attribute named `correlationId`)."""
        attribute = len("correlationId") + len("String") + len((self.correlation_id or "").encode())
        return len(self.to_body().encode()) + (attribute if self.correlation_id else 0)


def round_trips(message: QueuedInvoice) -> bool:
    """True when the message fits one SQS message, holds only characters SQS carries (body
    and correlation attribute), and reads back as exactly itself."""
    try:
        body = message.to_body()
        return (
            message.queued_bytes() <= MAX_MESSAGE_BYTES
            and uncarried(body) is None
            and uncarried(message.correlation_id or "") is None
            and QueuedInvoice.from_body(body) == message
        )
    except (ValidationError, ValueError, RecursionError):
        return False


@dataclass(frozen=True)
class ReceivedMessage:
    """One SQS record of a dispatcher batch."""

    message_id: str
    receipt_handle: str
    receive_count: int
    message: QueuedInvoice
