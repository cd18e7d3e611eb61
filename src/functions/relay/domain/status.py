"""The status document of one invoice: what the status API answers (GET /v1/invoices/{orderId})
and what the generic callback POSTs (docs/interface.md), so an ERP reads one shape either way."""

from datetime import UTC, datetime
from typing import Any

from relay.domain.ledger import LedgerEntry


def status_document(entry: LedgerEntry) -> dict[str, Any]:
    document: dict[str, Any] = {
        "orderId": entry.key.order_id,
        "invoiceType": entry.key.invoice_type,
        "invoiceNumber": entry.invoice_number,
        "status": entry.status,
        "attempts": entry.attempts,
        "lastError": {"code": entry.last_error.code, "message": entry.last_error.message}
        if entry.last_error
        else None,
        "acceptedAt": iso_time(entry.accepted_at),
        "updatedAt": iso_time(entry.updated_at),
    }
    if entry.retry_at:
        document["nextAttemptAt"] = iso_time(entry.retry_at)
    if entry.already_invoiced:
        document["alreadyInvoiced"] = True
    if entry.confirmed_by:
        document["confirmedBy"] = entry.confirmed_by
    if entry.dead_lettered_at:
        document["deadLetteredAt"] = iso_time(entry.dead_lettered_at)
    if entry.send_failed_at:
        document["sendFailedAt"] = iso_time(entry.send_failed_at)
    if entry.correlation_id:
        document["webhookId"] = entry.correlation_id
    if entry.history:  # operators' replays (`relay replay`): who, when, why, and the rejection undone
        document["history"] = [
            {
                "action": event.action,
                "at": iso_time(event.at),
                "by": event.by,
                "reason": event.reason,
                "previousError": {"code": event.previous_error.code, "message": event.previous_error.message}
                if event.previous_error
                else None,
            }
            for event in entry.history
        ]
    return document


def iso_time(epoch: float) -> str:
    """UTC, to the millisecond, with a Z: one fixed width, so two of them compare as text."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
