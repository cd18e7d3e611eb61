"""Reading the ledger by state and time through its work index: Queries, never a Scan.

The Queries are the ledger adapter's own (relay.adapters.ledger.InvoiceLedger.listed, over
relay.adapters.work_index, which the reconciler reads through too), so the command line holds
no copy of how an item maps to an entry.

The index (template.yaml, InvoiceLedgerTable, `ByDue`) is keyed `workShard` ("<list>#<n>": a
list split over WORK_INDEX_SHARDS shards so no partition takes more than a share of the writes)
and `dueAt`. A list is read shard by shard in parallel and merged. Its time is when the entry is
due in its list: for REJECTED and dead-lettered entries when they got there, for QUEUED when
queued, for RETRYING its retryAt, for IN_PROGRESS its lease's end. It is sparse on purpose: an
INVOICED entry leaves it, so it holds only what still needs attention and stays small however
many invoices went through. INVOICED entries therefore cannot be listed from it; `NotIndexed`
says so, and `relay status ORDER_ID` reads any single entry.
"""

from typing import TYPE_CHECKING, Any

from relay.adapters.ledger import InvoiceLedger
from relay.adapters.work_index import WORK_INDEX
from relay.domain.ledger import InvoiceStatus, LedgerEntry, WorkList

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

INDEXED = tuple(status for status in InvoiceStatus if status is not InvoiceStatus.INVOICED)

LISTS_OF: dict[InvoiceStatus, tuple[WorkList, ...]] = {
    InvoiceStatus.QUEUED: (WorkList.QUEUED,),
    InvoiceStatus.IN_PROGRESS: (WorkList.IN_PROGRESS,),
    # A RETRYING entry is held (its message comes back) or parked (the reconciler queues it).
    InvoiceStatus.RETRYING: (WorkList.RETRYING, WorkList.PARKED),
    InvoiceStatus.REJECTED: (WorkList.REJECTED,),
}
"""The work lists that hold the entries of each indexed status (dead-lettered ones aside)."""


class NotIndexed(Exception):
    """The status is not in the sparse index (INVOICED)."""

    def __init__(self, status: InvoiceStatus) -> None:
        super().__init__(
            f"{status} entries are not in the ledger's {WORK_INDEX} index (it is sparse: an invoiced"
            " entry leaves it, so it holds only what needs attention); ask for one order with"
            " `relay status ORDER_ID`, or see the count of invoiced orders on the CloudWatch dashboard"
        )
        self.status = status


def by_status(
    ledger: InvoiceLedger,
    status: InvoiceStatus,
    *,
    since: float | None = None,
    until: float | None = None,
    code: str | None = None,
    limit: int | None = None,
) -> list[LedgerEntry]:
    """Entries in `status` due in [since, until], latest first."""
    if status not in INDEXED:
        raise NotIndexed(status)
    found = [
        entry
        for work in LISTS_OF[status]
        for entry in ledger.listed(
            work, since=since, until=until, error_code=code, newest_first=True, limit=limit
        )
    ]
    found.sort(key=lambda entry: (entry.due_at or 0, str(entry.key)), reverse=True)
    return found if limit is None else found[:limit]


def count_invoiced(dynamodb: "DynamoDBClient", table_name: str, *, since: float | None = None) -> int:
    """How many entries are INVOICED (updated since `since`): the one count the sparse index
    cannot give, so it is a Scan that returns counts only (`Select=COUNT`). It reads the whole
    table, so `relay stats --no-invoiced` skips it on a large one."""
    condition = "#status = :invoiced" + (" AND updatedAt >= :since" if since is not None else "")
    values: dict[str, Any] = {":invoiced": {"S": InvoiceStatus.INVOICED.value}}
    if since is not None:
        values[":since"] = {"N": repr(since)}
    total = 0
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table_name,
        Select="COUNT",
        FilterExpression=condition,
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues=values,
    )
    for page in pages:
        total += int(page.get("Count", 0))
    return total


def dead_lettered(
    ledger: InvoiceLedger, *, since: float | None = None, limit: int | None = None
) -> list[LedgerEntry]:
    """Entries whose message went to the dead-letter queue, latest first: the index holds them
    apart from their status (they wait for `relay redrive`, and the reconciler leaves them)."""
    return ledger.listed(WorkList.DEAD_LETTERED, since=since, newest_first=True, limit=limit)


def as_row(entry: LedgerEntry) -> dict[str, Any]:
    """An entry as `relay list --json` shows it."""
    error = entry.last_error
    return {
        "orderId": entry.key.order_id,
        "invoiceType": entry.key.invoice_type.value,
        "invoiceNumber": entry.invoice_number,
        "status": entry.status.value,
        "attempts": entry.attempts,
        "code": error.code if error else None,
        "message": error.message if error else None,
        "acceptedAt": entry.accepted_at,
        "updatedAt": entry.updated_at,
        "retryAt": entry.retry_at,
        "dueAt": entry.due_at,
        "parked": entry.parked,
        "replays": len(entry.history),
    }
