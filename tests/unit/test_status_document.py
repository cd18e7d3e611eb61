"""The status document (relay.domain.status): what the status API answers and the generic
callback POSTs, field by field, from a ledger entry."""

from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus, LastError, LedgerEntry, LedgerEvent
from relay.domain.status import iso_time, status_document

ACCEPTED = 1_800_000_000.0


def entry(**fields: object) -> LedgerEntry:
    base = LedgerEntry(
        key=InvoiceKey("FY-1", InvoiceType.RETURN),
        status=InvoiceStatus.QUEUED,
        content_hash="h",
        invoice_number="CN-1",
        attempts=0,
        accepted_at=ACCEPTED,
        updated_at=ACCEPTED + 1.5,
    )
    return LedgerEntry(**{**base.__dict__, **fields})  # type: ignore[arg-type]


def test_a_new_invoice_shows_its_key_number_state_and_times_and_nothing_else() -> None:
    # Given an entry just accepted, with no error, mark or history
    # When its status document is built
    document = status_document(entry())
    # Then it holds exactly the fields every invoice has
    assert document == {
        "orderId": "FY-1",
        "invoiceType": "return",
        "invoiceNumber": "CN-1",
        "status": "QUEUED",
        "attempts": 0,
        "lastError": None,
        "acceptedAt": "2027-01-15T08:00:00.000Z",
        "updatedAt": "2027-01-15T08:00:01.500Z",
    }


def test_an_invoice_that_went_through_everything_shows_every_mark() -> None:
    # Given an entry with a retry due, an error, every mark and an operator's replay
    replay = LedgerEvent(
        "replay", ACCEPTED + 60, "ops@example.com", "fixed the GSTIN", LastError("IN422", "bad")
    )
    busy = entry(
        status=InvoiceStatus.RETRYING,
        attempts=3,
        last_error=LastError("fynd_unavailable", "Fynd Update Invoice failed (502)"),
        retry_at=ACCEPTED + 90,
        already_invoiced=True,
        confirmed_by="IN453",
        dead_lettered_at=ACCEPTED + 120,
        send_failed_at=ACCEPTED + 2,
        correlation_id="wh-7",
        history=(replay, LedgerEvent("replay", ACCEPTED + 70, "ops", "again")),
    )
    # When its status document is built
    document = status_document(busy)
    # Then each mark appears under its documented name, times in UTC to the millisecond
    assert document["lastError"] == {
        "code": "fynd_unavailable",
        "message": "Fynd Update Invoice failed (502)",
    }
    assert document["nextAttemptAt"] == "2027-01-15T08:01:30.000Z"
    assert document["alreadyInvoiced"] is True
    assert document["confirmedBy"] == "IN453"
    assert document["deadLetteredAt"] == "2027-01-15T08:02:00.000Z"
    assert document["sendFailedAt"] == "2027-01-15T08:00:02.000Z"
    assert document["webhookId"] == "wh-7"
    assert document["history"] == [
        {
            "action": "replay",
            "at": "2027-01-15T08:01:00.000Z",
            "by": "ops@example.com",
            "reason": "fixed the GSTIN",
            "previousError": {"code": "IN422", "message": "bad"},
        },
        {
            "action": "replay",
            "at": "2027-01-15T08:01:10.000Z",
            "by": "ops",
            "reason": "again",
            "previousError": None,
        },
    ]


def test_times_are_utc_to_the_millisecond_with_a_z() -> None:
    assert iso_time(0.0004) == "1970-01-01T00:00:00.000Z"
    assert iso_time(ACCEPTED + 0.25) == "2027-01-15T08:00:00.250Z"
