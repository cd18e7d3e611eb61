"""Deciding what happens to each invoice of an accepted webhook, given what the ledger holds.

Pure: the caller reads the ledger entries first and applies the decisions after. The rules
follow the relay's interface: same key and same content is a duplicate (answered with its
state, never sent twice); different content for a key the ledger holds is a conflict,
unless that key was REJECTED, in which case the corrected invoice starts over.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from relay.domain.invoice import Invoice, InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry


class Action(StrEnum):
    CREATE = "create"
    """New key: record it QUEUED and queue it."""
    RESUBMIT = "resubmit"
    """Corrected content for a REJECTED key: back to QUEUED and queue it."""
    REQUEUE = "requeue"
    """Duplicate of a QUEUED entry: queue it again, in case the first enqueue never happened."""
    ANSWER = "answer"
    """Duplicate of an entry that is in flight or final: just report its state."""


@dataclass(frozen=True)
class Admission:
    invoice: Invoice
    content_hash: str
    action: Action
    status: InvoiceStatus
    previous_hash: str | None = None

    @property
    def enqueue(self) -> bool:
        return self.action is not Action.ANSWER


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


def admit(invoices: Sequence[Invoice], recorded: Mapping[InvoiceKey, LedgerEntry]) -> list[Admission]:
    """One admission per invoice, in order; raises ConflictError naming every conflict at once."""
    admissions: list[Admission] = []
    conflicts: list[KeyConflict] = []
    for index, invoice in enumerate(invoices):
        content_hash = invoice.content_hash()
        entry = recorded.get(invoice.key)
        if entry is None:
            admissions.append(Admission(invoice, content_hash, Action.CREATE, InvoiceStatus.QUEUED))
        elif entry.content_hash == content_hash:
            action = Action.REQUEUE if entry.status is InvoiceStatus.QUEUED else Action.ANSWER
            admissions.append(Admission(invoice, content_hash, action, entry.status))
        elif entry.status is InvoiceStatus.REJECTED:
            admissions.append(
                Admission(invoice, content_hash, Action.RESUBMIT, InvoiceStatus.QUEUED, entry.content_hash)
            )
        else:
            conflicts.append(KeyConflict(index, invoice.key, entry.status, entry.invoice_number))
    if conflicts:
        raise ConflictError(conflicts)
    return admissions
