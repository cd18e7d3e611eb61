"""The DynamoDB ledger adapter against in-process moto (the table built from template.yaml): its
conditions state the domain's claim rule, and every outage leaves as LedgerUnavailableError."""

from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from contract.drivers import RawBody
from factories import invoice
from relay.adapters.ledger import InvoiceLedger
from relay.domain.errors import LedgerUnavailableError
from relay.domain.intake import admit
from relay.domain.ledger import ClaimRefusal, InvoiceStatus
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Invoiced, RetryLater

TABLE = "InvoiceLedgerTable"
NOW = 1_800_000_000.0


@pytest.fixture
def ledger(dynamodb: Any) -> InvoiceLedger:
    return InvoiceLedger(TABLE, dynamodb)


def accepted(ledger: InvoiceLedger, order_id: str) -> QueuedInvoice:
    document = invoice(order_id)
    (admission,) = admit([document], {})
    ledger.accept([admission], now=NOW, correlation_id="wh-1")
    return QueuedInvoice(invoice=document, content_hash=admission.content_hash, accepted_at=NOW)


def raw_item(client: Any, order_id: str) -> dict[str, Any]:
    item: dict[str, Any] = client.get_item(
        TableName=TABLE, Key={"pk": {"S": f"{order_id}#sale"}}, ConsistentRead=True
    )["Item"]
    return item


def test_a_claim_names_its_message_and_keeps_the_status_index(ledger: InvoiceLedger, dynamodb: Any) -> None:
    message = accepted(ledger, "CLAIM-1")
    claim = ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=120)
    assert claim.granted
    assert claim.entry is not None
    assert claim.entry.claim_message_id == "m-1"
    assert raw_item(dynamodb, "CLAIM-1")["statusKey"] == {"S": "IN_PROGRESS"}
    # When the verdict is INVOICED, the entry leaves the sparse status index
    assert ledger.record(message.invoice.key, Invoiced(), owner="w-1", now=NOW + 1, ack_id=None)
    assert "statusKey" not in raw_item(dynamodb, "CLAIM-1")


def test_a_refused_claim_reads_the_entry_from_the_same_request(ledger: InvoiceLedger, dynamodb: Any) -> None:
    message = accepted(ledger, "CLAIM-2")
    ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=120)
    calls: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb", lambda event_name, **_: calls.append(event_name))
    # When another worker tries while the lease is live
    claim = ledger.claim(message, message_id="m-2", owner="w-2", now=NOW + 1, lease_seconds=120)
    # Then it is BUSY, names the holder's message, and took one request
    assert claim.refusal is ClaimRefusal.BUSY
    assert claim.entry is not None
    assert claim.entry.claim_message_id == "m-1"
    assert calls == ["before-call.dynamodb.UpdateItem"]


def test_a_failed_send_is_marked_on_a_queued_entry_only_and_the_claim_clears_it(
    ledger: InvoiceLedger, dynamodb: Any
) -> None:
    # Given an entry ingest recorded QUEUED, and one already claimed
    message = accepted(ledger, "SEND-1")
    claimed = accepted(ledger, "SEND-2")
    ledger.claim(claimed, message_id="m-2", owner="w-1", now=NOW, lease_seconds=120)
    # When ingest marks both as not queued
    marked = ledger.mark_send_failed(message.invoice.key, now=NOW + 1)
    refused = ledger.mark_send_failed(claimed.invoice.key, now=NOW + 1)
    # Then only the QUEUED one carries the mark, and the mark is not progress (updatedAt stays)
    assert (marked, refused) == (True, False)
    entry = ledger.get(message.invoice.key)
    assert entry is not None
    assert (entry.status, entry.send_failed_at, entry.updated_at) == (InvoiceStatus.QUEUED, NOW + 1, NOW)
    assert "sendFailedAt" not in raw_item(dynamodb, "SEND-2")
    # And a claim clears it
    claim = ledger.claim(message, message_id="m-1", owner="w-1", now=NOW + 2, lease_seconds=120)
    assert claim.entry is not None
    assert claim.entry.send_failed_at is None
    assert "sendFailedAt" not in raw_item(dynamodb, "SEND-1")


def test_a_retrying_entry_cannot_be_claimed_before_its_retry_at(ledger: InvoiceLedger) -> None:
    message = accepted(ledger, "CLAIM-3")
    ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=120)
    ledger.record(
        message.invoice.key, RetryLater("fynd_throttled", "429", 60), owner="w-1", now=NOW, ack_id=None
    )
    early = ledger.claim(message, message_id="m-2", owner="w-2", now=NOW + 30, lease_seconds=120)
    assert early.refusal is ClaimRefusal.NOT_YET
    due = ledger.claim(message, message_id="m-2", owner="w-2", now=NOW + 61, lease_seconds=120)
    assert due.granted
    assert due.entry is not None
    assert due.entry.status is InvoiceStatus.IN_PROGRESS


@pytest.mark.parametrize(
    "fault",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
    ],
    ids=["unreachable", "timeout", "throttled", "throttling"],
)
def test_every_ledger_method_leaves_an_outage_as_ledger_unavailable(
    dynamodb: Any, fault: Exception | str
) -> None:
    # No SDK retries: this is about what leaves the adapter, not how long botocore tries.
    client = boto3.client("dynamodb", region_name="ap-south-1", config=Config(retries={"max_attempts": 1}))
    ledger = InvoiceLedger(TABLE, client)
    message = accepted(ledger, f"OUT-{type(fault).__name__}-{fault if isinstance(fault, str) else ''}")
    ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=120)
    key = message.invoice.key

    def fail(**_: object) -> Any:
        if isinstance(fault, Exception):
            raise fault
        body = f'{{"__type":"com.amazonaws.dynamodb.v20120810#{fault}","message":"slow down"}}'
        return AWSResponse("http://127.0.0.1", 400, {}, RawBody(body.encode()))

    # First, ahead of moto's own handler: the fault answers instead of the table.
    client.meta.events.register_first("before-send.dynamodb", fail)
    (admission,) = admit([invoice("OUT-NEW")], {})
    calls = {
        "get": lambda: ledger.get(key),
        "get_many": lambda: ledger.get_many([key]),
        "accept": lambda: ledger.accept([admission], now=NOW, correlation_id=None),
        "claim": lambda: ledger.claim(message, message_id="m-2", owner="w-2", now=NOW, lease_seconds=1),
        "record": lambda: ledger.record(key, Invoiced(), owner="w-1", now=NOW, ack_id=None),
        "mark_dead_lettered": lambda: ledger.mark_dead_lettered(message, message_id="m-1", now=NOW),
        "mark_send_failed": lambda: ledger.mark_send_failed(key, now=NOW),
    }
    leaked = []
    for name, call in calls.items():
        try:
            call()
        except LedgerUnavailableError:
            continue
        except Exception as error:  # the breach itself: an SDK error escaping the adapter
            leaked.append(f"{name}: {type(error).__name__}")
            continue
        leaked.append(f"{name}: no error")
    assert leaked == []
