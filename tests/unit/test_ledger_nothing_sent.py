"""The ledger keeps whether the last error proves nothing reached Fynd (the dispatcher's rule
"no Shipment Info read where nothing can have been sent"), on DynamoDB (moto, the table built
from template.yaml) as in the fake."""

from typing import Any

import pytest

from factories import invoice
from fakes import FakeClock, InMemoryLedger
from relay.adapters.ledger import InvoiceLedger
from relay.domain.intake import admit
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Invoiced, RetryLater
from relay.domain.ports import Ledger

NOW = 1_800_000_000.0
KEY = InvoiceKey("A", InvoiceType.SALE)


@pytest.fixture(params=["fake", "dynamodb"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    if request.param == "fake":
        return InMemoryLedger(FakeClock(NOW))
    dynamodb: Any = request.getfixturevalue("dynamodb")
    return InvoiceLedger("InvoiceLedgerTable", dynamodb)


def claimed(ledger: Ledger, at: float = NOW) -> None:
    document = invoice("A")
    (admission,) = admit([document], {})
    if ledger.get(KEY) is None:
        ledger.accept([admission], now=NOW, correlation_id="wh-1")
    message = QueuedInvoice(invoice=document, content_hash=admission.content_hash, accepted_at=NOW)
    assert ledger.claim(message, message_id="m-1", owner="w", now=at, lease_seconds=120).granted


def test_a_retry_records_whether_nothing_was_sent(ledger: Ledger) -> None:
    # Given a claimed invoice whose send met a 429
    claimed(ledger)
    ledger.record(
        KEY, RetryLater("fynd_throttled", "429", 30, nothing_sent=True), owner="w", now=NOW, ack_id=None
    )
    # Then the entry says its last error sent nothing
    entry = ledger.get(KEY)
    assert entry is not None
    assert entry.last_error is not None
    assert (entry.last_error.code, entry.last_error.nothing_sent) == ("fynd_throttled", True)
    # And when the next attempt's answer is lost (the order may be at Fynd), it says so no more
    claimed(ledger, NOW + 31)
    ledger.record(KEY, RetryLater("fynd_ambiguous", "lost", 30), owner="w", now=NOW + 31, ack_id=None)
    entry = ledger.get(KEY)
    assert entry is not None
    assert entry.last_error is not None
    assert entry.last_error.nothing_sent is False


def test_a_final_entry_keeps_no_last_error(ledger: Ledger) -> None:
    claimed(ledger)
    ledger.record(
        KEY, RetryLater("fynd_throttled", "429", 30, nothing_sent=True), owner="w", now=NOW, ack_id=None
    )
    claimed(ledger, NOW + 31)
    ledger.record(KEY, Invoiced(), owner="w", now=NOW + 31, ack_id="ack-1")
    entry = ledger.get(KEY)
    assert entry is not None
    assert entry.last_error is None
