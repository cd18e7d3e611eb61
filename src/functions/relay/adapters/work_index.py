"""The ledger's work index on DynamoDB: every entry that still needs someone, by when it is due.

`ByDue` (template.yaml, InvoiceLedgerTable) is keyed `workShard` = "<list>#<n>" and `dueAt`:
the list is a relay.domain.ledger.WorkList (QUEUED, IN_PROGRESS, RETRYING, PARKED, REJECTED,
DEAD_LETTERED) and n = a hash of the invoice key over WORK_INDEX_SHARDS shards. Why sharded: a
partition of a table or an index takes at most 1,000 WCU/s (AWS's limit, which adaptive capacity
does not lift), and a throttled index throttles the base-table write that feeds it. One
partition per status took 2 WCU per invoice in QUEUED and 2 in IN_PROGRESS, so it passed the
limit at about 500 invoices/s; over 16 shards each takes a sixteenth (docs/scale.md).

Why `dueAt`: the reconciler asks each list "what was due by then?" (queued at, retryAt, the
lease's end; or, for an entry a dispatcher queued afresh before claiming it, the end of its send
stamp, relay.domain.ports.Ledger.stamp_sent): one range Query per shard that reads only what it
will act on, never entries waiting out a long back-off or behind a backlog. Sparse: an INVOICED
entry REMOVEs both attributes on its final write, so the index holds only what still needs
attention.

Every write of the ledger adapter sets both attributes in the same UpdateItem that changes the
status (relay.adapters.ledger), so the index can never say a different status than the entry,
only an older one (a GSI is eventually consistent): every reader acts through a conditional write.
"""

import hashlib
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import LedgerEntry, WorkList

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

WORK_INDEX: Final = "ByDue"
SHARD_ATTRIBUTE: Final = "workShard"
DUE_ATTRIBUTE: Final = "dueAt"
DEFAULT_WORK_SHARDS: Final = 16
"""The template's default (WorkIndexShards): at 2,000 invoices/s each shard of a list takes
about 250 WCU/s, a quarter of a partition's 1,000."""
_FOREVER: Final = 2**40  # seconds: the year 36812


def shard_of(key: InvoiceKey, shards: int) -> int:
    """The key's shard: a stable hash (not Python's, which changes per process) modulo `shards`."""
    digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def work_shard(work: WorkList, key: InvoiceKey, shards: int) -> str:
    """The index partition of `key` in the list `work`."""
    return f"{work}#{shard_of(key, shards)}"


def work_list_of(item: Mapping[str, Any]) -> WorkList | None:
    """The list an item is in, from its partition key; None when it is in none."""
    shard = item.get(SHARD_ATTRIBUTE, {}).get("S")
    return WorkList(str(shard).rsplit("#", 1)[0]) if shard else None


def set_work(work: WorkList, key: InvoiceKey, due: float, shards: int) -> tuple[str, dict[str, Any]]:
    """The SET clause (and its values) that puts an entry in `work`, due at `due`."""
    values: dict[str, AttributeValueTypeDef] = {
        ":work_shard": {"S": work_shard(work, key, shards)},
        ":due_at": {"N": _number(due)},
    }
    return f"{SHARD_ATTRIBUTE} = :work_shard, {DUE_ATTRIBUTE} = :due_at", values


REMOVE_WORK: Final = f"{SHARD_ATTRIBUTE}, {DUE_ATTRIBUTE}"
"""What a final INVOICED write REMOVEs: the entry leaves the index."""


def _number(value: float) -> str:
    return repr(round(value, 3)) if isinstance(value, float) else str(value)


class WorkIndexReader:
    """Queries of the work index, shard by shard in parallel; never a Scan."""

    def __init__(
        self,
        table_name: str,
        client: "DynamoDBClient",
        shards: int,
        entry_of: Callable[[Mapping[str, Any]], LedgerEntry],
    ) -> None:
        self._table = table_name
        self._client = client
        self._shards = shards
        self._entry_of = entry_of

    def due(
        self, work: WorkList, *, due_by: float, limit: int, out_of_time: Callable[[], bool]
    ) -> tuple[list[LedgerEntry], bool]:
        """Entries of `work` due by `due_by` (inclusive), earliest first within each shard, at
        most `limit`, every shard taking an equal share of it; and whether more may be left (a
        shard filled its share, or `out_of_time` said stop before a page was read)."""
        if limit <= 0:
            return [], True
        share = math.ceil(limit / self._shards)

        def shard(n: int) -> tuple[list[LedgerEntry], bool]:
            request = self._request(f"{work}#{n}", since=None, until=due_by, newest_first=False)
            return self._pages(request, share, out_of_time)

        found: list[LedgerEntry] = []
        more = False
        for entries, left in self._each_shard(shard):
            found += entries
            more = more or left
        found.sort(key=lambda entry: entry.due_at or 0)
        return found[:limit], more or len(found) > limit

    def listed(
        self,
        work: WorkList,
        *,
        since: float | None = None,
        until: float | None = None,
        error_code: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[LedgerEntry]:
        """Entries of `work` due in [since, until] (for REJECTED and DEAD_LETTERED: when they
        got there; for QUEUED: when queued), oldest first (or newest), at most `limit`, exactly:
        every shard is read up to the limit and the shards merged."""

        def shard(n: int) -> tuple[list[LedgerEntry], bool]:
            request = self._request(f"{work}#{n}", since=since, until=until, newest_first=newest_first)
            if error_code is not None:
                request["FilterExpression"] = "lastErrorCode = :code"
                request["ExpressionAttributeValues"][":code"] = {"S": error_code}
            return self._pages(request, limit, lambda: False)

        found = [entry for entries, _ in self._each_shard(shard) for entry in entries]
        found.sort(key=lambda entry: (entry.due_at or 0, str(entry.key)), reverse=newest_first)
        return found if limit is None else found[:limit]

    def _each_shard[R](self, work: Callable[[int], R]) -> list[R]:
        if self._shards == 1:
            return [work(0)]
        with ThreadPoolExecutor(min(self._shards, 16), thread_name_prefix="work-index") as pool:
            return list(pool.map(work, range(self._shards)))

    def _request(
        self, partition: str, *, since: float | None, until: float | None, newest_first: bool
    ) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "IndexName": WORK_INDEX,
            "KeyConditionExpression": f"{SHARD_ATTRIBUTE} = :shard AND {DUE_ATTRIBUTE} BETWEEN :since AND :until",
            "ExpressionAttributeValues": {
                ":shard": {"S": partition},
                ":since": {"N": _number(since if since is not None else 0)},
                ":until": {"N": _number(until if until is not None else _FOREVER)},
            },
            "ScanIndexForward": not newest_first,
        }

    def _pages(
        self, request: dict[str, Any], limit: int | None, out_of_time: Callable[[], bool]
    ) -> tuple[list[LedgerEntry], bool]:
        """Read pages until `limit` entries, the last page, or `out_of_time`; and whether more may be left."""
        found: list[LedgerEntry] = []
        while limit is None or len(found) < limit:
            if out_of_time():
                return found, True
            if limit is not None:
                request["Limit"] = limit - len(found)
            page = self._client.query(**request)
            found += [self._entry_of(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return found, False
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found, True
