"""Reading the ledger by status and time through its `ByStatus` index: a Query, never a Scan.

The index (template.yaml, InvoiceLedgerTable) is keyed `statusKey` (the status) and
`updatedAt`. It is sparse on purpose: an INVOICED entry drops `statusKey`, so the index
holds only what still needs someone's attention (QUEUED, IN_PROGRESS, RETRYING, REJECTED)
and stays small however many invoices went through. INVOICED entries therefore cannot be
listed from it; `NotIndexed` says so, and `relay status ORDER_ID` reads any single entry.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relay.domain.ledger import InvoiceStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, QueryInputTypeDef

INDEX_NAME = "ByStatus"
INDEXED = tuple(status for status in InvoiceStatus if status is not InvoiceStatus.INVOICED)


class NotIndexed(Exception):
    """The status is not in the sparse index (INVOICED)."""

    def __init__(self, status: InvoiceStatus) -> None:
        super().__init__(
            f"{status} entries are not in the ledger's {INDEX_NAME} index (it is sparse: an invoiced"
            " entry leaves it, so it holds only what needs attention); ask for one order with"
            " `relay status ORDER_ID`, or see the count of invoiced orders on the CloudWatch dashboard"
        )
        self.status = status


@dataclass(frozen=True)
class LedgerRow:
    order_id: str
    invoice_type: str
    invoice_number: str
    status: str
    attempts: int
    code: str | None
    message: str | None
    accepted_at: float
    updated_at: float
    retry_at: float | None
    replays: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "invoiceType": self.invoice_type,
            "invoiceNumber": self.invoice_number,
            "status": self.status,
            "attempts": self.attempts,
            "code": self.code,
            "message": self.message,
            "acceptedAt": self.accepted_at,
            "updatedAt": self.updated_at,
            "retryAt": self.retry_at,
            "replays": self.replays,
        }


def by_status(
    dynamodb: "DynamoDBClient",
    table: str,
    status: InvoiceStatus,
    *,
    since: float | None = None,
    until: float | None = None,
    code: str | None = None,
    limit: int | None = None,
) -> Iterator[LedgerRow]:
    """Entries in `status` last updated in [since, until], newest first, page by page."""
    if status not in INDEXED:
        raise NotIndexed(status)
    values: dict[str, AttributeValueTypeDef] = {
        ":status": {"S": status.value},
        ":from": {"N": _number(since or 0)},
        ":to": {"N": _number(until if until is not None else 2**40)},
    }
    query: QueryInputTypeDef = {
        "TableName": table,
        "IndexName": INDEX_NAME,
        "KeyConditionExpression": "statusKey = :status AND updatedAt BETWEEN :from AND :to",
        "ExpressionAttributeValues": values,
        "ScanIndexForward": False,
    }
    if code:
        query["FilterExpression"] = "lastErrorCode = :code"
        values[":code"] = {"S": code}
    found = 0
    while True:
        page = dynamodb.query(**query)
        for item in page.get("Items", []):
            row = _row(item)
            # A GSI is eventually consistent: an entry that just moved on may still show here.
            if row.status != status.value:
                continue
            yield row
            found += 1
            if limit is not None and found >= limit:
                return
        if "LastEvaluatedKey" not in page:
            return
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _number(value: float) -> str:
    return repr(round(value, 3)) if isinstance(value, float) else str(value)


def _row(item: dict[str, Any]) -> LedgerRow:
    def text(name: str) -> str | None:
        value = item.get(name, {}).get("S")
        return str(value) if value else None

    def number(name: str) -> float | None:
        value = item.get(name, {}).get("N")
        return float(value) if value is not None else None

    order_id, _, invoice_type = item["pk"]["S"].rpartition("#")
    return LedgerRow(
        order_id=order_id,
        invoice_type=invoice_type,
        invoice_number=text("invoiceNumber") or "",
        status=text("status") or "",
        attempts=int(number("attempts") or 0),
        code=text("lastErrorCode"),
        message=text("lastErrorMessage"),
        accepted_at=number("acceptedAt") or 0.0,
        updated_at=number("updatedAt") or 0.0,
        retry_at=number("retryAt"),
        replays=len(item.get("history", {}).get("L", [])),
    )
