"""An ERP invoice as the webhook accepts it: Fynd's Update Invoice fields plus `locationCode`.

The models forbid unknown fields so a typo in an ERP mapping ("invoiceNo") is refused at the
door instead of silently dropped on the way to Fynd.

Two fields are the relay's own and never reach Fynd: `locationCode` (which Fynd credentials)
and `eInvoiceRequired` (the ERP's statement that this invoice is e-invoiced, so it must carry
its IRN: see `e_invoice_gaps`).

`orderId` and `locationCode` are restricted to KEY_PATTERN (documented in `docs/interface.md`):
ASCII letters, digits, `.`, `_` and `-`, so an id needs no percent-encoding in the status
GET's path and has one spelling only (no Unicode normalisation forms, no case folding).
"""

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

NonBlank = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256, pattern=r"\S")]
Identifier = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^\S+$")]
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""What an `orderId` or a `locationCode` may be: it keys the ledger and names a URL path segment."""
KeyPart = Annotated[str, StringConstraints(strict=True, pattern=KEY_PATTERN)]


class InvoiceType(StrEnum):
    SALE = "sale"
    RETURN = "return"


class InvoiceKey(NamedTuple):
    """What makes two webhooks the same invoice: Fynd invoices an order once per direction."""

    order_id: str
    invoice_type: InvoiceType

    def __str__(self) -> str:
        return f"{self.order_id}#{self.invoice_type}"

    @classmethod
    def parse(cls, text: str) -> "InvoiceKey":
        order_id, _, invoice_type = text.rpartition("#")
        return cls(order_id, InvoiceType(invoice_type))


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    orderItemId: Identifier
    quantity: Annotated[StrictInt, Field(ge=1)]
    imeiSerialNumber: list[NonBlank] | None = None


class Invoice(BaseModel):
    """One invoice or credit note for one Fynd order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    orderId: KeyPart
    invoiceNumber: NonBlank
    invoiceType: InvoiceType
    invoiceQrCode: NonBlank | None = None
    irnNumber: NonBlank | None = None
    signedInvoice: Annotated[str, StringConstraints(strict=True, min_length=1)] | None = None
    ackNumber: NonBlank | None = None
    ackDate: NonBlank | None = None
    orderItems: Annotated[list[OrderItem], Field(min_length=1)] | None = None
    packages: list[dict[str, Any]] | None = None
    locationCode: KeyPart | None = None
    eInvoiceRequired: StrictBool | None = None

    @property
    def key(self) -> InvoiceKey:
        return InvoiceKey(self.orderId, self.invoiceType)

    def to_fynd(self) -> dict[str, Any]:
        """The object Fynd's Update Invoice takes: our fields minus the relay's own."""
        return self.model_dump(mode="json", exclude_none=True, exclude=set(RELAY_ONLY_FIELDS))

    def e_invoice_gaps(self) -> list[str]:
        """The e-invoice fields an invoice that says `eInvoiceRequired: true` lacks: its IRN.

        Fynd invoices an order once; an e-invoiced invoice sent without its IRN would be final
        at Fynd without it. Only the IRN is required: an e-invoice India Compliance records as
        "Manually Generated" has an acknowledgement but no signed invoice or QR code.
        """
        return ["irnNumber"] if self.eInvoiceRequired and not self.irnNumber else []

    def only_adds_to(self, earlier: "Invoice") -> bool:
        """True when this invoice is `earlier` with fields added and none changed or removed: an
        ERP's enrichment (the IRN it did not have yet, say), not a different invoice."""
        mine, theirs = self.model_dump(exclude_none=True), earlier.model_dump(exclude_none=True)
        return mine != theirs and all(mine.get(field) == value for field, value in theirs.items())

    def content_hash(self) -> str:
        """Same invoice, same hash, whatever the key order or whitespace of the webhook body."""
        canonical = json.dumps(
            self.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


RELAY_ONLY_FIELDS = ("locationCode", "eInvoiceRequired")
"""Fields the relay reads and Fynd never sees."""

_KEY_PART: TypeAdapter[str] = TypeAdapter(KeyPart)


def is_key_part(text: str) -> bool:
    """True when `text` is a valid `orderId`/`locationCode`: the same rule the models apply."""
    try:
        _KEY_PART.validate_python(text)
    except ValidationError:
        return False
    return True
