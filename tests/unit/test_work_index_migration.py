"""Moving a deployed stack to the work index (docs/runbook.md#moving-to-the-work-index), over
in-process moto with the table of step 1 (LegacyByStatusIndex=true: ByDue beside ByStatus, both
from template.yaml): entries the old release wrote are backfilled through ByStatus, each once,
never over a newer write; and the write sharding that is the reason for the move, metered over
the fakes at 500 invoices/s."""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from contract.drivers import create_table
from factories import invoice
from fakes import IndexMeter, World
from relay.adapters.ledger import InvoiceLedger
from relay.adapters.work_index import shard_of
from relay.domain.ledger import WorkList
from relay.domain.messages import QueuedInvoice
from relay_cli.backfill import backfill

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TABLE = "InvoiceLedgerTable"
NOW = 1_800_000_000.0
SHARDS = 4


@pytest.fixture
def legacy(monkeypatch: pytest.MonkeyPatch) -> Iterator["DynamoDBClient"]:
    """The table as step 1 of the move deploys it: both indexes."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="ap-south-1")
        create_table(client, {"LegacyByStatusIndex": "true"})
        yield client


def old_entry(client: "DynamoDBClient", order_id: str, status: str, **numbers: float) -> None:
    """An item as the release before the work index wrote it: statusKey, no workShard/dueAt."""
    item: dict[str, Any] = {
        "pk": {"S": f"{order_id}#sale"},
        "status": {"S": status},
        "statusKey": {"S": "DEAD_LETTERED" if numbers.pop("dead", 0) else status},
        "contentHash": {"S": "h"},
        "updatedAt": {"N": str(NOW)},
        **{name: {"N": str(value)} for name, value in numbers.items()},
    }
    client.put_item(TableName=TABLE, Item=item)


def test_the_backfill_puts_every_old_entry_in_its_list_once_due_on_its_own_clock(
    legacy: "DynamoDBClient",
) -> None:
    # Given entries the old release wrote in each state, and an INVOICED one (in no index)
    old_entry(legacy, "Q-1", "QUEUED")
    old_entry(legacy, "R-1", "RETRYING", retryAt=NOW + 600)
    old_entry(legacy, "P-1", "IN_PROGRESS", leaseUntil=NOW + 120)
    old_entry(legacy, "J-1", "REJECTED")
    old_entry(legacy, "D-1", "RETRYING", retryAt=NOW - 60, dead=1)
    legacy.put_item(
        TableName=TABLE,
        Item={"pk": {"S": "I-1#sale"}, "status": {"S": "INVOICED"}, "contentHash": {"S": "h"}},
    )
    ledger = InvoiceLedger(TABLE, legacy, shards=SHARDS)
    # When the operator counts with a dry run, then backfills
    counted = backfill(legacy, TABLE, shards=SHARDS, dry_run=True)
    assert (counted.written, ledger.listed(WorkList.QUEUED)) == (5, [])
    result = backfill(legacy, TABLE, shards=SHARDS)
    # Then each is in its list of the work index, due on its status' clock
    assert (result.seen, result.written, result.already, result.moved) == (5, 5, 0, 0)
    due = {
        work: [(entry.key.order_id, entry.due_at) for entry in ledger.listed(work)]
        for work in (
            WorkList.QUEUED,
            WorkList.RETRYING,
            WorkList.IN_PROGRESS,
            WorkList.REJECTED,
            WorkList.DEAD_LETTERED,
        )
    }
    assert due == {
        WorkList.QUEUED: [("Q-1", NOW)],
        WorkList.RETRYING: [("R-1", NOW + 600)],
        WorkList.IN_PROGRESS: [("P-1", NOW + 120)],
        WorkList.REJECTED: [("J-1", NOW)],
        WorkList.DEAD_LETTERED: [("D-1", NOW)],
    }
    # And in the shard its key hashes to
    item = legacy.get_item(TableName=TABLE, Key={"pk": {"S": "Q-1#sale"}})["Item"]
    assert item["workShard"]["S"] == f"QUEUED#{shard_of(ledger.listed(WorkList.QUEUED)[0].key, SHARDS)}"
    # And a second run changes nothing
    again = backfill(legacy, TABLE, shards=SHARDS)
    assert (again.written, again.already) == (0, 5)


def test_the_backfill_never_overwrites_what_the_new_release_wrote(legacy: "DynamoDBClient") -> None:
    # Given an old entry the backfill has read, which a dispatcher of the new release then claims
    old_entry(legacy, "Q-1", "QUEUED", acceptedAt=NOW)
    ledger = InvoiceLedger(TABLE, legacy, shards=SHARDS)
    message = QueuedInvoice(invoice=invoice("Q-1"), content_hash="h", accepted_at=NOW)
    claimed: list[bool] = []

    def claim_once(**_: object) -> None:
        if not claimed:
            claimed.append(False)
            claimed[0] = ledger.claim(
                message, message_id="m-1", owner="w", now=NOW + 5, lease_seconds=120
            ).granted

    legacy.meta.events.register("before-call.dynamodb.UpdateItem", claim_once)
    # When the backfill writes it
    result = backfill(legacy, TABLE, shards=SHARDS)
    # Then its conditional write is refused: the claim's own index keys stand
    assert claimed == [True]
    assert (result.written, result.moved) == (0, 1)
    (entry,) = ledger.listed(WorkList.IN_PROGRESS)
    assert entry.due_at == NOW + 125


def test_wall_2_at_500_invoices_a_second_no_work_index_partition_takes_more_than_a_tenth_of_one() -> None:
    # Given 500 invoices a second, each accepted, claimed and invoiced within its second
    world = World()
    for _ in range(3):
        for start in range(0, 500, 100):
            world.accept(*(invoice(f"FY-{world.clock.now:.0f}-{start + i}") for i in range(100)))
        while world.queue.messages:
            world.run(limit=100)
        world.clock.advance(1)
    # Then ByStatus would have taken a partition's whole 1,000 WCU/s (QUEUED: a put and a delete
    # per invoice), while no shard of the work index takes more than a tenth of it
    assert IndexMeter.peak(world.ledger.meter.by_status) == (1000, "QUEUED")
    units, _ = IndexMeter.peak(world.ledger.meter.work)
    assert units <= 100
