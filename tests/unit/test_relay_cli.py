"""The `relay` command's pure parts: times, the stack's secret, how a status GET is signed, and
how a ledger entry is listed."""

from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus, LastError, LedgerEntry, LedgerEvent
from relay_cli.ledger_index import NotIndexed, as_row, by_status
from relay_cli.output import parse_when
from relay_cli.target import signing_secret_from
from relay_cli.webhook import request_line, status_headers, status_path

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SECRET = "whsec_TE9DQUwtT05MWS1ub3QtYS1zZWNyZXQh"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", datetime(2026, 11, 26, 11, 30, tzinfo=UTC)),
        ("24h", datetime(2026, 11, 25, 12, 0, tzinfo=UTC)),
        ("7d", datetime(2026, 11, 19, 12, 0, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T10:15:00", datetime(2026, 11, 1, 10, 15, tzinfo=UTC)),
        ("2026-11-01T10:15:00+05:30", datetime(2026, 11, 1, 4, 45, tzinfo=UTC)),
    ],
)
def test_since_from_and_to_read_durations_dates_and_date_times(text: str, expected: datetime) -> None:
    assert parse_when(text, now=NOW) == expected.timestamp()


def test_a_to_date_covers_its_whole_day() -> None:
    end = parse_when("2026-11-01", now=NOW, end_of_day=True)
    assert (
        datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC).timestamp()
        < end
        < datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    )


def test_an_unreadable_time_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match="24h"):
        parse_when("last tuesday", now=NOW)


@pytest.mark.parametrize(
    ("secret_string", "expected"),
    [
        # As the template generates it: 32 letters and digits under "current", given to the ERP as whsec_ + it
        ('{"current": "abcdefghijklmnopqrstuvwxyz012345"}', "whsec_abcdefghijklmnopqrstuvwxyz012345"),
        ('{"old": "whsec_b2xk", "current": "whsec_bmV3"}', "whsec_bmV3"),
        ('{"next": "whsec_bmV4dA=="}', "whsec_bmV4dA=="),
        ('"not an object"', None),
        ("not json", None),
        ("{}", None),
    ],
)
def test_a_stacks_signing_secret_is_its_current_value(secret_string: str, expected: str | None) -> None:
    assert signing_secret_from(secret_string) == expected


def test_a_status_get_is_signed_over_its_request_line_as_sent() -> None:
    # Given the URL of an order's status, with characters that must be escaped
    url = "http://127.0.0.1:3000" + status_path("FY/1 2", "return")
    # When the command signs it
    headers = status_headers(SECRET, url)
    # Then its signature verifies over `GET <path>?<query>` exactly as sent (the contract), and
    # over nothing else: a captured signature reads no other order
    line = request_line("GET", url)
    assert line == "GET /v1/invoices/FY%2F1%202?invoiceType=return"
    signatures = headers["webhook-signature"].split()
    verified = []
    for content in (line, ""):
        for signature in signatures:
            try:
                Webhook(SECRET).verify(content, {**headers, "webhook-signature": signature}, json_parse=False)
            except Exception:  # noqa: S112 - trying each signature in turn
                continue
            verified.append(content)
    assert verified == [line]


def test_a_listed_entry_is_one_flat_json_row() -> None:
    # Given a rejected entry that an operator replayed once before it was rejected again
    entry = LedgerEntry(
        key=InvoiceKey("FY-1", InvoiceType.RETURN),
        status=InvoiceStatus.REJECTED,
        content_hash="h",
        invoice_number="CN-1",
        attempts=2,
        accepted_at=1_800_000_000.0,
        updated_at=1_800_000_060.5,
        last_error=LastError("IN401", "Order already cancelled"),
        history=(LedgerEvent("replay", 1_800_000_030.0, "ops", "fixed in Fynd"),),
        due_at=1_800_000_060.5,
    )
    # When `relay list --json` shows it, Then it is this row
    assert as_row(entry) == {
        "orderId": "FY-1",
        "invoiceType": "return",
        "invoiceNumber": "CN-1",
        "status": "REJECTED",
        "attempts": 2,
        "code": "IN401",
        "message": "Order already cancelled",
        "acceptedAt": 1_800_000_000.0,
        "updatedAt": 1_800_000_060.5,
        "retryAt": None,
        "dueAt": 1_800_000_060.5,
        "parked": False,
        "replays": 1,
    }


def test_invoiced_entries_are_refused_before_any_read_the_index_is_sparse() -> None:
    # Given no ledger at all (None: any read would fail)
    # When INVOICED entries are asked for, Then the command says why it cannot list them
    with pytest.raises(NotIndexed, match="sparse"):
        by_status(None, InvoiceStatus.INVOICED)  # type: ignore[arg-type]
