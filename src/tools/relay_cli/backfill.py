"""`relay backfill-work-index`: step 2 of moving a deployed stack to the work index
(docs/runbook.md#moving-to-the-work-index).

A stack deployed before the work index has entries written without `workShard` and `dueAt`.
Once the release that writes both indexes is deployed (LegacyByStatusIndex=true), every new
write sets them; this gives them to the older unfinished, rejected and dead-lettered entries,
found through the legacy ByStatus index (one Query per status partition, page by page, never a
Scan), so the reconciler and `relay list` see every entry before ByStatus is dropped.

Each entry is written only if it still lacks `workShard` and is still as read (status and
updatedAt): a dispatcher's write in between already put it in the index, and wins. Running it
twice changes nothing the second time: it is safe to repeat until it reports 0 written.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from relay.adapters.ledger import BY_STATUS_INDEX, DEAD_LETTERED_KEY
from relay.adapters.work_index import DUE_ATTRIBUTE, SHARD_ATTRIBUTE, work_shard
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus, WorkList

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LEGACY_PARTITIONS = (
    InvoiceStatus.QUEUED,
    InvoiceStatus.IN_PROGRESS,
    InvoiceStatus.RETRYING,
    InvoiceStatus.REJECTED,
    DEAD_LETTERED_KEY,
)


@dataclass
class BackfillResult:
    seen: int = 0
    """Entries read from ByStatus."""
    written: int = 0
    """Entries given their work index keys now."""
    already: int = 0
    """Entries that had them (written by the new release, or by an earlier backfill)."""
    moved: int = 0
    """Entries written by a dispatcher between the read and the write: indexed by that write."""
    by_list: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "written": self.written,
            "already": self.already,
            "moved": self.moved,
            "byList": self.by_list,
        }


def work_keys(item: Mapping[str, Any]) -> tuple[WorkList, float]:
    """The list and due time of a legacy item, as the ledger adapter would write them now. An
    entry found RETRYING was held in flight by the old release (it parked nothing)."""

    def number(name: str) -> float | None:
        value = item.get(name, {}).get("N")
        return float(value) if value is not None else None

    updated = number("updatedAt") or 0.0
    if item.get("statusKey", {}).get("S") == DEAD_LETTERED_KEY:
        return WorkList.DEAD_LETTERED, updated
    status = InvoiceStatus(item["status"]["S"])
    if status is InvoiceStatus.RETRYING:
        return WorkList.RETRYING, number("retryAt") or updated
    if status is InvoiceStatus.IN_PROGRESS:
        return WorkList.IN_PROGRESS, number("leaseUntil") or updated
    return WorkList(str(status)), updated


def backfill(
    client: "DynamoDBClient",
    table_name: str,
    *,
    shards: int,
    dry_run: bool = False,
    on_progress: Callable[[int], None] = lambda _: None,
) -> BackfillResult:
    result = BackfillResult()
    for partition in LEGACY_PARTITIONS:
        request: dict[str, Any] = {
            "TableName": table_name,
            "IndexName": BY_STATUS_INDEX,
            "KeyConditionExpression": "statusKey = :status",
            "ExpressionAttributeValues": {":status": {"S": str(partition)}},
        }
        while True:
            page = client.query(**request)
            for item in page.get("Items", []):
                result.seen += 1
                _one(client, table_name, item, shards, dry_run, result)
                on_progress(result.seen)
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return result


def _one(
    client: "DynamoDBClient",
    table_name: str,
    item: Mapping[str, Any],
    shards: int,
    dry_run: bool,
    result: BackfillResult,
) -> None:
    if SHARD_ATTRIBUTE in item:
        result.already += 1
        return
    work, due = work_keys(item)
    result.by_list[str(work)] = result.by_list.get(str(work), 0) + 1
    if dry_run:
        result.written += 1
        return
    key = InvoiceKey.parse(item["pk"]["S"])
    try:
        client.update_item(
            TableName=table_name,
            Key={"pk": item["pk"]},
            UpdateExpression=f"SET {SHARD_ATTRIBUTE} = :shard, {DUE_ATTRIBUTE} = :due",
            ConditionExpression=(
                f"attribute_not_exists({SHARD_ATTRIBUTE}) AND #status = :status AND updatedAt = :seen"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":shard": {"S": work_shard(work, key, shards)},
                ":due": {"N": repr(round(due, 3))},
                ":status": item["status"],
                ":seen": item.get("updatedAt", {"N": "0"}),
            },
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        result.moved += 1
        return
    result.written += 1
