"""Every refusal and outage the relay names, in one place: relay.api maps each to one answer,
the dispatcher to what becomes of a message. Nothing here is raised for a bug."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus


class WebhookRefused(Exception):
    """The body cannot be accepted; nothing was recorded or queued."""


class PayloadTooLarge(WebhookRefused):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body is {size} bytes; the limit is {limit}")


class UnsupportedMediaType(WebhookRefused):
    def __init__(self, content_type: str | None) -> None:
        super().__init__(f"content type must be application/json, not {content_type or 'missing'}")


class MalformedBody(WebhookRefused):
    pass


@dataclass(frozen=True)
class FieldError:
    index: int | None
    """Position in the array; None for a problem with the body as a whole."""
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class InvalidInvoices(WebhookRefused):
    """A 422: `errors` names each field. `detail` replaces the POST's summary where nothing
    could have been queued (the status GET's order id)."""

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        super().__init__(detail or f"{len(errors)} problem(s) in the invoices; nothing was queued")
        self.errors = errors


class SignatureRefused(Exception):
    """The request is not signed by anyone we trust; the reason is safe to show the sender."""


class SigningSecretMissing(Exception):
    """The relay's own configuration is wrong: no sender could be verified."""


class SchemeRefused(SignatureRefused):
    """A signature refused by one named scheme; the message names it and never the expected value."""

    def __init__(self, scheme: str, reason: str) -> None:
        super().__init__(f"{scheme}: {reason}")
        self.scheme = scheme


@dataclass(frozen=True)
class KeyConflict:
    index: int
    key: InvoiceKey
    status: InvoiceStatus
    invoice_number: str


class ConflictError(Exception):
    """Some invoices differ from the ones the ledger already holds for their keys."""

    def __init__(self, conflicts: Sequence[KeyConflict]) -> None:
        super().__init__(f"{len(conflicts)} invoice(s) conflict with recorded invoices")
        self.conflicts = tuple(conflicts)


class UnqueueableInvoices(Exception):
    """Invoices that would not reach the dispatcher as they are (too large for one message,
    or not read back unchanged): the sender must change them. Nothing was written."""

    def __init__(self, keys: Sequence[InvoiceKey]) -> None:
        super().__init__(f"{len(keys)} invoice(s) cannot be queued as sent; nothing was queued")
        self.keys = tuple(keys)


class AcceptanceOutOfTime(Exception):
    """Too little of the request's time is left to write the ledger and then queue; nothing was
    written, so the sender's retry starts clean."""


class LedgerUnavailableError(Exception):
    """The ledger could not be read or written (throttled, unreachable) even after retries.

    The only error a Ledger raises for an outage: the adapter translates every SDK error at its
    boundary, so the domain never sees botocore's types."""


class RateLimiterUnavailableError(Exception):
    """The shared Fynd rate limiter could not be read or written (a DynamoDB outage)."""


class AcceptRaceError(Exception):
    """Another request changed one of these keys between our read and our write."""


class QueueUnavailableError(Exception):
    """Some messages could not be queued even after retrying; `unsent` names their keys when known."""

    def __init__(self, message: str, unsent: Sequence[InvoiceKey] = ()) -> None:
        super().__init__(message)
        self.unsent = tuple(unsent)


class SecretFormatError(Exception):
    """A secret exists but does not hold what the relay expects (says which secret, never its value)."""


class SecretUnavailableError(Exception):
    """Secrets Manager could not be read just now (throttled, unreachable, denied): retry later."""


class WritebackFailed(Exception):
    """An ERP target did not take an outcome; the write-back message comes back after a back-off.
    The message names the target and the HTTP status or failure kind, never a secret or a body."""


class TargetDown(WritebackFailed):
    """The target cannot be reached or answers as a server in trouble (timeout, 5xx, 429): the
    rest of the batch does not call it again."""


class OutcomeRefused(WritebackFailed):
    """The target answered this one outcome with a refusal (a 4xx): other invoices may still go."""


class RequestLogUnavailableError(Exception):
    """The ERP's Webhook Request Log could not be read (down, refused our key, or an answer
    that is not Frappe's). The message names the status and Frappe's `exc_type`, never a secret."""


class RecoveryIncompleteError(Exception):
    """A scheduled recovery ran out of time before its window's last row: what it reached is
    taken in, the next run reads the rest (relay.handlers.recover)."""
