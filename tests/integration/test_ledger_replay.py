"""InvoiceLedger.replay against DynamoDB (moto over HTTP): REJECTED -> QUEUED once, with its
history, only for the entry the operator looked at."""

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from factories import invoice
from relay.adapters.ledger import InvoiceLedger
from relay.domain.intake import admit
from relay.domain.ledger import InvoiceStatus, LastError, LedgerEntry
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Rejected
from relay_local.identity import REGION
from relay_local.stack import LocalStack, MotoServer, build_stack

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with MotoServer() as server:
        server.reset()
        yield build_stack(server.url, parameters={"FyndBaseUrl": "https://fynd.invalid"})


@pytest.fixture
def client(stack: LocalStack) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=stack.endpoint_url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


@pytest.fixture
def ledger(stack: LocalStack, client: Any) -> InvoiceLedger:
    return InvoiceLedger(stack.table_name, client)


def rejected(ledger: InvoiceLedger, order_id: str) -> LedgerEntry:
    """An entry Fynd rejected with IN401."""
    document = invoice(order_id)
    (admission,) = admit([document], {})
    ledger.accept([admission], now=NOW, correlation_id="wh-1")
    message = QueuedInvoice(invoice=document, content_hash=admission.content_hash, accepted_at=NOW)
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=NOW + 1, lease_seconds=60).granted
    assert ledger.record(document.key, Rejected("IN401", "cancelled"), owner="w-1", now=NOW + 2, ack_id=None)
    entry = ledger.get(document.key)
    assert entry is not None
    assert entry.status is InvoiceStatus.REJECTED
    return entry


def test_a_replay_queues_the_entry_afresh_and_records_who_when_why(
    ledger: InvoiceLedger, client: Any, stack: LocalStack
) -> None:
    # Given a rejected entry
    entry = rejected(ledger, "REPLAY-1")
    # When an operator replays it
    replayed = ledger.replay(entry, by="ops@example", reason="order reinstated", now=NOW + 100)
    # Then it is QUEUED again as a new acceptance would be, back in the status index, its
    # IN403 wait counted from the replay; acceptedAt still says when the relay first accepted it
    assert replayed is not None
    assert (replayed.status, replayed.attempts) == (InvoiceStatus.QUEUED, 0)
    assert (replayed.accepted_at, replayed.waiting_since) == (NOW, NOW + 100)
    assert replayed.last_error is None
    item = client.get_item(
        TableName=stack.table_name, Key={"pk": {"S": "REPLAY-1#sale"}}, ConsistentRead=True
    )
    assert item["Item"]["statusKey"] == {"S": "QUEUED"}
    assert "expiresAt" not in item["Item"]  # a final entry's TTL must not remove a live one
    # And its history says who, when, why, and which rejection it undid
    (event,) = replayed.history
    assert (event.action, event.at, event.by, event.reason) == (
        "replay",
        NOW + 100,
        "ops@example",
        "order reinstated",
    )
    assert event.previous_error == LastError("IN401", "cancelled")


def test_a_replay_of_an_entry_that_moved_on_changes_nothing(ledger: InvoiceLedger) -> None:
    # Given a rejected entry an operator looked at, which another replay then moved on
    seen = rejected(ledger, "REPLAY-2")
    assert ledger.replay(seen, by="first", reason="r", now=NOW + 100) is not None
    # When a second operator replays what they saw
    second = ledger.replay(seen, by="second", reason="r", now=NOW + 200)
    # Then nothing is written: one replay, one history event
    assert second is None
    current = ledger.get(seen.key)
    assert current is not None
    assert [event.by for event in current.history] == ["first"]


def test_only_a_rejected_entry_is_replayed(ledger: InvoiceLedger) -> None:
    # Given a queued entry (never rejected)
    document = invoice("REPLAY-3")
    (admission,) = admit([document], {})
    ledger.accept([admission], now=NOW, correlation_id="wh-1")
    entry = ledger.get(document.key)
    assert entry is not None
    # When it is replayed / Then the domain's rule (only REJECTED moves to QUEUED) refuses it
    assert ledger.replay(entry, by="ops", reason="r", now=NOW + 1) is None
