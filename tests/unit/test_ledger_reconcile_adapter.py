"""The DynamoDB ledger's reconciler side against in-process moto, the table built from
template.yaml's own properties (its keys and the ByDue work index): what accept stores for the
reconciler, the index Queries (never a Scan), the conditional mark, and the stored invoice."""

from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from factories import invoice
from relay.adapters.ledger import BODY_RETENTION_SECONDS, InvoiceLedger
from relay.adapters.work_index import DEFAULT_WORK_SHARDS, work_shard
from relay.domain.errors import LedgerUnavailableError
from relay.domain.intake import Action, Admission
from relay.domain.invoice import Invoice, InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry, WorkList
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Invoiced, RetryLater

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TABLE = "InvoiceLedgerTable"
NOW = 1_800_000_000.0
MINUTE = 60.0


class RecordingClient:
    """The DynamoDB client, with the name of every operation the ledger calls on it."""

    def __init__(self, client: "DynamoDBClient") -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return method(**kwargs)

        return call


@pytest.fixture
def recording(dynamodb: "DynamoDBClient") -> RecordingClient:
    return RecordingClient(dynamodb)


@pytest.fixture
def ledger(recording: RecordingClient) -> InvoiceLedger:
    return InvoiceLedger(TABLE, recording)  # type: ignore[arg-type]


def create(item: Invoice) -> Admission:
    return Admission(item, item.content_hash(), Action.CREATE, InvoiceStatus.QUEUED)


def accept(ledger: InvoiceLedger, *items: Invoice, at: float = NOW, correlation_id: str = "wh-1") -> None:
    ledger.accept([create(item) for item in items], now=at, correlation_id=correlation_id)


def stalled(ledger: InvoiceLedger, status: InvoiceStatus, *, due_by: float, limit: int) -> list[LedgerEntry]:
    """The reconciler's read of one list: the entries due by `due_by`."""
    found, _ = ledger.due(WorkList(str(status)), due_by=due_by, limit=limit, out_of_time=lambda: False)
    return found


def shard(status: str, pk: str) -> dict[str, Any]:
    return {"S": work_shard(WorkList(status), InvoiceKey.parse(pk), DEFAULT_WORK_SHARDS)}


def raw(dynamodb: "DynamoDBClient", pk: str) -> dict[str, Any]:
    return dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item", {})


# ---- what accept stores ----


def test_breach_11_accept_stores_the_queued_message_beside_the_entry_with_a_ttl(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient", recording: RecordingClient
) -> None:
    # Given a new invoice
    item = invoice("FY-1")
    # When ingest accepts it
    accept(ledger, item)
    # Then one transaction wrote the entry, in the work index's QUEUED list, and the body item
    ((operation, request),) = recording.calls
    assert operation == "transact_write_items"
    assert [write["Update"]["Key"]["pk"]["S"] for write in request["TransactItems"]] == [
        "FY-1#sale",
        "body#FY-1#sale",
    ]
    assert raw(dynamodb, "FY-1#sale")["workShard"] == shard("QUEUED", "FY-1#sale")
    body = raw(dynamodb, "body#FY-1#sale")
    assert float(body["expiresAt"]["N"]) == NOW + BODY_RETENTION_SECONDS
    # And the body is exactly the message ingest queues: the reconciler's copy reads the same
    assert ledger.body(item.key) == QueuedInvoice(
        invoice=item, content_hash=item.content_hash(), accepted_at=NOW, correlation_id="wh-1"
    )
    # And the entry stays small: the invoice is not in it
    assert "body" not in raw(dynamodb, "FY-1#sale")


def test_breach_11_a_corrected_invoice_replaces_the_stored_one(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient"
) -> None:
    # Given a REJECTED entry
    first = invoice("FY-1")
    accept(ledger, first)
    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "FY-1#sale"}},
        UpdateExpression="SET #s = :r, statusKey = :r, workShard = :shard",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":r": {"S": "REJECTED"}, ":shard": shard("REJECTED", "FY-1#sale")},
    )
    # When the ERP sends corrected content, which starts over
    fixed = invoice("FY-1", invoiceNumber="INV-FIXED")
    ledger.accept(
        [Admission(fixed, fixed.content_hash(), Action.RESUBMIT, InvoiceStatus.QUEUED, first.content_hash())],
        now=NOW + 60,
        correlation_id="wh-2",
    )
    # Then the entry is QUEUED in the index and the stored invoice is the corrected one
    assert raw(dynamodb, "FY-1#sale")["workShard"] == shard("QUEUED", "FY-1#sale")
    stored = ledger.body(fixed.key)
    assert stored is not None
    assert (stored.invoice, stored.content_hash, stored.correlation_id) == (
        fixed,
        fixed.content_hash(),
        "wh-2",
    )


def test_breach_11_more_new_invoices_than_one_transaction_holds_still_store_every_body(
    ledger: InvoiceLedger,
) -> None:
    # Given 100 new invoices (200 writes with their bodies; DynamoDB takes 100 per transaction)
    items = [invoice(f"FY-{index}") for index in range(100)]
    # When ingest accepts them
    accept(ledger, *items)
    # Then every entry is QUEUED and every body stored
    assert {entry.status for entry in ledger.get_many(item.key for item in items).values()} == {
        InvoiceStatus.QUEUED
    }
    assert all(ledger.body(item.key) is not None for item in items)


def test_breach_11_a_failed_accept_leaves_no_entry_without_its_body(ledger: InvoiceLedger) -> None:
    # Given one invoice already recorded, so a second CREATE for it fails its condition
    accept(ledger, invoice("FY-1"))
    # When a request for it and another new invoice races and loses
    with pytest.raises(Exception):  # noqa: B017,PT011 - the race error another branch refines
        accept(ledger, invoice("FY-2"), invoice("FY-1"))
    # Then neither the new entry nor its body exists: the transaction is all or nothing
    assert ledger.get(InvoiceKey.parse("FY-2#sale")) is None
    assert ledger.body(InvoiceKey.parse("FY-2#sale")) is None


# ---- the index Query ----


def test_breach_11_due_queries_the_sparse_work_index_oldest_first_and_never_scans(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient", recording: RecordingClient
) -> None:
    # Given QUEUED entries written 30, 20 and 5 minutes ago, a body item, and an INVOICED one
    # (INVOICED entries have no workShard: they are not in the index)
    accept(ledger, invoice("OLD"), at=NOW - 30 * MINUTE)
    accept(ledger, invoice("MID"), at=NOW - 20 * MINUTE)
    accept(ledger, invoice("NEW"), at=NOW - 5 * MINUTE)
    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "MID#sale"}},
        UpdateExpression="SET #s = :i REMOVE workShard, dueAt",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":i": {"S": "INVOICED"}},
    )
    recording.calls.clear()
    # When the reconciler asks for QUEUED entries not written for 15 minutes
    found = stalled(ledger, InvoiceStatus.QUEUED, due_by=NOW - 15 * MINUTE, limit=10)
    # Then only the old QUEUED one comes back, read with Queries on ByDue alone (one per shard)
    assert [str(entry.key) for entry in found] == ["OLD#sale"]
    assert {name for name, _ in recording.calls} == {"query"}
    assert {request["IndexName"] for _, request in recording.calls} == {"ByDue"}


def test_breach_11_due_reads_at_most_its_limit_in_due_order(ledger: InvoiceLedger) -> None:
    # Given seven stalled QUEUED entries
    for index in range(7):
        accept(ledger, invoice(f"FY-{index}"), at=NOW - (60 - index) * MINUTE)
    # When at most five are asked for, Then five come back, in due order
    found = stalled(ledger, InvoiceStatus.QUEUED, due_by=NOW, limit=5)
    assert len(found) == 5
    assert [entry.due_at for entry in found] == sorted(entry.due_at or 0 for entry in found)
    # And a limit of zero reads nothing
    assert stalled(ledger, InvoiceStatus.QUEUED, due_by=NOW, limit=0) == []


def test_breach_11_entries_waiting_out_a_back_off_or_a_lease_do_not_use_up_the_limit(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient"
) -> None:
    # Given RETRYING entries last written an hour ago: three waiting out an IN403 back-off
    # (retryAt ahead), and the one whose retryAt passed long ago comes last by updatedAt
    for index, retry_in in enumerate([30, 30, 30, -40]):
        pk = f"FY-{index}#sale"
        accept(ledger, invoice(f"FY-{index}"), at=NOW - 60 * MINUTE)
        dynamodb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": pk}},
            UpdateExpression="SET #s = :r, workShard = :shard, updatedAt = :at, retryAt = :due, dueAt = :due",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":r": {"S": "RETRYING"},
                ":shard": shard("RETRYING", pk),
                ":at": {"N": str(NOW - (60 - index) * MINUTE)},
                ":due": {"N": str(NOW + retry_in * MINUTE)},
            },
        )
    # When one stalled RETRYING entry is asked for
    found = stalled(ledger, InvoiceStatus.RETRYING, due_by=NOW - 15 * MINUTE, limit=1)
    # Then it is the one whose retry time ran out, not the first three by age
    assert [str(entry.key) for entry in found] == ["FY-3#sale"]


# ---- the mark ----


def test_breach_11_mark_moves_an_unchanged_entry_out_of_the_window_once(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient"
) -> None:
    # Given a stalled entry as the reconciler listed it
    accept(ledger, invoice("FY-1"), at=NOW - 30 * MINUTE)
    (entry,) = stalled(ledger, InvoiceStatus.QUEUED, due_by=NOW - 15 * MINUTE, limit=10)
    # When it is marked, and marked again with the same (now stale) reading
    first = ledger.mark_reconciled(entry, now=NOW)
    second = ledger.mark_reconciled(entry, now=NOW + 1)
    # Then only the first mark lands; the entry left the window and records the requeue
    assert (first, second) == (True, False)
    assert stalled(ledger, InvoiceStatus.QUEUED, due_by=NOW - 15 * MINUTE, limit=10) == []
    item = raw(dynamodb, "FY-1#sale")
    assert (float(item["updatedAt"]["N"]), float(item["reconciledAt"]["N"]), item["reconciles"]["N"]) == (
        NOW,
        NOW,
        "1",
    )
    assert float(item["dueAt"]["N"]) == NOW
    assert item["status"] == {"S": "QUEUED"}


def dispatcher_writes(dynamodb: "DynamoDBClient", pk: str, status: str, *, at: float) -> None:
    """What a claim or a record does to the fields the mark checks: status and updatedAt."""
    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": pk}},
        UpdateExpression="SET #s = :s, workShard = :shard, updatedAt = :at, dueAt = :at",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": status}, ":shard": shard(status, pk), ":at": {"N": str(at)}},
    )


@pytest.mark.parametrize(
    ("listed_as", "then"),
    [("QUEUED", "IN_PROGRESS"), ("IN_PROGRESS", "RETRYING"), ("RETRYING", "RETRYING")],
    ids=["claimed", "recorded-for-retry", "claimed-and-recorded-again"],
)
def test_breach_11_mark_refuses_an_entry_that_moved_since_it_was_listed(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient", listed_as: str, then: str
) -> None:
    # Given a stalled entry the reconciler listed
    accept(ledger, invoice("FY-1"), at=NOW - 60 * MINUTE)
    dispatcher_writes(dynamodb, "FY-1#sale", listed_as, at=NOW - 40 * MINUTE)
    (entry,) = stalled(ledger, InvoiceStatus(listed_as), due_by=NOW - 15 * MINUTE, limit=10)
    # And a dispatcher writes it before the reconciler marks it
    dispatcher_writes(dynamodb, "FY-1#sale", then, at=NOW - MINUTE)
    # When the reconciler marks what it listed, Then it is refused: the entry is moving
    assert ledger.mark_reconciled(entry, now=NOW) is False


def test_breach_11_mark_refuses_an_entry_whose_content_was_replaced(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient"
) -> None:
    # Given a listed entry whose content hash changes under the same status and time
    accept(ledger, invoice("FY-1"), at=NOW - 60 * MINUTE)
    (entry,) = stalled(ledger, InvoiceStatus.QUEUED, due_by=NOW - 15 * MINUTE, limit=10)
    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "FY-1#sale"}},
        UpdateExpression="SET contentHash = :h",
        ExpressionAttributeValues={":h": {"S": "other"}},
    )
    # Then the mark is refused
    assert ledger.mark_reconciled(entry, now=NOW) is False


# ---- the stored invoice, and outages ----


def test_breach_11_body_is_none_for_an_entry_accepted_before_bodies_were_stored(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient"
) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "body#BROKEN#sale"}, "body": {"S": "{not json"}})
    assert ledger.body(InvoiceKey.parse("NEVER#sale")) is None
    assert ledger.body(InvoiceKey.parse("BROKEN#sale")) is None


class ThrottledClient:
    def __getattr__(self, name: str) -> Any:
        def throttled(**_: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, name
            )

        return throttled


ANY_ENTRY = LedgerEntry(
    key=InvoiceKey.parse("FY-1#sale"),
    status=InvoiceStatus.QUEUED,
    content_hash="h",
    invoice_number="INV-1",
    attempts=0,
    accepted_at=NOW,
    updated_at=NOW,
)


@pytest.mark.parametrize(
    "call",
    [
        lambda ledger: stalled(ledger, InvoiceStatus.QUEUED, due_by=NOW, limit=10),
        lambda ledger: ledger.mark_reconciled(ANY_ENTRY, now=NOW),
        lambda ledger: ledger.body(InvoiceKey.parse("FY-1#sale")),
    ],
    ids=["due", "mark_reconciled", "body"],
)
def test_breach_11_reconciler_methods_leave_an_outage_as_ledger_unavailable(call: Any) -> None:
    # Given DynamoDB throttling past botocore's retries
    ledger = InvoiceLedger(TABLE, ThrottledClient())  # type: ignore[arg-type]
    # When the reconciler's methods run, Then the domain sees its own error type
    with pytest.raises(LedgerUnavailableError):
        call(ledger)


# ---- the dead-letter mark ----


def retrying_after_a_claim(ledger: InvoiceLedger, item: Invoice, *, message_id: str) -> QueuedInvoice:
    """`item` accepted, claimed by `message_id`, and recorded RETRYING (Fynd was down)."""
    accept(ledger, item)
    message = QueuedInvoice(invoice=item, content_hash=item.content_hash(), accepted_at=NOW)
    assert ledger.claim(message, message_id=message_id, owner="w-1", now=NOW, lease_seconds=120).granted
    verdict = RetryLater("fynd_unavailable", "Fynd answered 503", 60)
    assert ledger.record(item.key, verdict, owner="w-1", now=NOW + 1, ack_id=None)
    return message


def test_a_dead_lettered_entry_leaves_the_reconcilers_index_partition_until_it_is_claimed_again(
    ledger: InvoiceLedger, dynamodb: "DynamoDBClient"
) -> None:
    # Given an entry RETRYING whose message (m-1) leaves for the dead-letter queue
    message = retrying_after_a_claim(ledger, invoice("FY-1"), message_id="m-1")
    later = NOW + 60 * MINUTE
    assert [entry.key for entry in stalled(ledger, InvoiceStatus.RETRYING, due_by=later, limit=10)] == [
        message.invoice.key
    ]
    # When the dispatcher marks it
    assert ledger.mark_dead_lettered(message, message_id="m-1", now=NOW + 2)
    # Then the status stays RETRYING, marked, and the reconciler's Query no longer finds it
    entry = ledger.get(message.invoice.key)
    assert entry is not None
    assert (entry.status, entry.dead_lettered_at) == (InvoiceStatus.RETRYING, NOW + 2)
    assert raw(dynamodb, "FY-1#sale")["workShard"] == shard("DEAD_LETTERED", "FY-1#sale")
    assert stalled(ledger, InvoiceStatus.RETRYING, due_by=later, limit=10) == []
    # And a redriven message's claim clears the mark, and its record puts it back in the partition
    assert ledger.claim(message, message_id="m-9", owner="w-2", now=NOW + 120, lease_seconds=120).granted
    assert "deadLetteredAt" not in raw(dynamodb, "FY-1#sale")
    verdict = RetryLater("fynd_unavailable", "Fynd answered 503", 60)
    assert ledger.record(message.invoice.key, verdict, owner="w-2", now=NOW + 121, ack_id=None)
    assert len(stalled(ledger, InvoiceStatus.RETRYING, due_by=later, limit=10)) == 1


def test_the_dead_letter_mark_is_refused_when_the_entry_moved_on(ledger: InvoiceLedger) -> None:
    # Given an entry claimed by m-2 (a reconciled copy), one INVOICED, and one with other content
    claimed_elsewhere = retrying_after_a_claim(ledger, invoice("FY-1"), message_id="m-2")
    invoiced = invoice("FY-2")
    accept(ledger, invoiced)
    done = QueuedInvoice(invoice=invoiced, content_hash=invoiced.content_hash(), accepted_at=NOW)
    assert ledger.claim(done, message_id="m-3", owner="w-1", now=NOW, lease_seconds=120).granted
    assert ledger.record(invoiced.key, Invoiced(), owner="w-1", now=NOW + 1, ack_id=None)
    stale = QueuedInvoice(
        invoice=invoice("FY-1", invoiceNumber="INV-OLD"), content_hash="other", accepted_at=NOW
    )
    # When messages that do not hold them leave for the dead-letter queue
    # Then none of those entries is marked
    assert not ledger.mark_dead_lettered(claimed_elsewhere, message_id="m-1", now=NOW + 2)
    assert not ledger.mark_dead_lettered(done, message_id="m-3", now=NOW + 2)
    assert not ledger.mark_dead_lettered(stale, message_id="m-2", now=NOW + 2)
    assert all(ledger.get(invoice(order).key).dead_lettered_at is None for order in ("FY-1", "FY-2"))  # type: ignore[union-attr]
