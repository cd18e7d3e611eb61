"""The ledger's work index (relay.adapters.work_index) against in-process moto, the table and its
ByDue index built from template.yaml: which list and shard every write puts an entry in, and the
two reads, `due` (the reconciler's) and `listed` (`relay list`, `stats`, `report`, `replay --status`)."""

from typing import Any

import pytest
from botocore.exceptions import ClientError

from factories import invoice
from relay.adapters.ledger import InvoiceLedger
from relay.adapters.work_index import WORK_INDEX, shard_of
from relay.domain.errors import LedgerUnavailableError
from relay.domain.intake import admit
from relay.domain.ledger import InvoiceStatus, LastError, WorkList
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Invoiced, Rejected, RetryLater, Verdict

TABLE = "InvoiceLedgerTable"
NOW = 1_800_000_000.0
MINUTE = 60.0
SHARDS = 4


@pytest.fixture
def ledger(dynamodb: Any) -> InvoiceLedger:
    return InvoiceLedger(TABLE, dynamodb, shards=SHARDS)


@pytest.fixture
def operations(dynamodb: Any) -> list[str]:
    """The name of every DynamoDB operation called from here on."""
    called: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb", lambda event_name, **_: called.append(event_name))
    return called


def raw(dynamodb: Any, order_id: str) -> dict[str, Any]:
    return dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"{order_id}#sale"}}, ConsistentRead=True)[
        "Item"
    ]


def accepted(ledger: InvoiceLedger, order_id: str, *, at: float) -> QueuedInvoice:
    document = invoice(order_id)
    (admission,) = admit([document], {})
    ledger.accept([admission], now=at, correlation_id="wh-1")
    return QueuedInvoice(invoice=document, content_hash=admission.content_hash, accepted_at=at)


def settled(ledger: InvoiceLedger, order_id: str, verdict: Verdict, *, at: float) -> None:
    message = accepted(ledger, order_id, at=at)
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=at, lease_seconds=120).granted
    assert ledger.record(message.invoice.key, verdict, owner="w-1", now=at, ack_id=None)


def never() -> bool:
    return False


# ---- what each write puts in the index ----


def test_every_move_puts_the_entry_in_its_list_and_shard_due_at_its_own_clock(
    ledger: InvoiceLedger, dynamodb: Any
) -> None:
    # Given an invoice accepted at NOW
    message = accepted(ledger, "FY-1", at=NOW)
    shard = shard_of(message.invoice.key, SHARDS)

    def work() -> tuple[str | None, float | None]:
        item = raw(dynamodb, "FY-1")
        due = item.get("dueAt", {}).get("N")
        return item.get("workShard", {}).get("S"), float(due) if due else None

    # Then it is QUEUED, due when queued
    assert work() == (f"QUEUED#{shard}", NOW)
    # When claimed, Then IN_PROGRESS, due at the lease's end
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=NOW + 10, lease_seconds=120).granted
    assert work() == (f"IN_PROGRESS#{shard}", NOW + 130)
    # When recorded for a short retry, Then RETRYING (held in flight), due at retryAt
    ledger.record(
        message.invoice.key, RetryLater("fynd_unavailable", "503", 60), owner="w-1", now=NOW + 20, ack_id=None
    )
    assert work() == (f"RETRYING#{shard}", NOW + 80)
    # When claimed again and recorded for a wait past 15 minutes, Then PARKED, due at retryAt
    assert ledger.claim(message, message_id="m-2", owner="w-1", now=NOW + 80, lease_seconds=120).granted
    ledger.record(
        message.invoice.key, RetryLater("IN403", "too early", 901), owner="w-1", now=NOW + 90, ack_id=None
    )
    assert work() == (f"PARKED#{shard}", NOW + 991)
    entry = ledger.get(message.invoice.key)
    assert entry is not None
    assert (entry.parked, entry.due_at) == (True, NOW + 991)
    # When claimed and invoiced, Then it leaves the index (sparse): no workShard, no dueAt
    assert ledger.claim(message, message_id="m-3", owner="w-1", now=NOW + 991, lease_seconds=120).granted
    ledger.record(message.invoice.key, Invoiced(), owner="w-1", now=NOW + 995, ack_id=None)
    assert work() == (None, None)


def test_a_rejected_entry_stays_listed_for_the_operator_due_when_rejected(
    ledger: InvoiceLedger, dynamodb: Any
) -> None:
    settled(ledger, "FY-1", Rejected("IN401", "cancelled"), at=NOW)
    item = raw(dynamodb, "FY-1")
    assert item["workShard"]["S"].startswith("REJECTED#")
    assert float(item["dueAt"]["N"]) == NOW


def test_keys_spread_over_the_shards(ledger: InvoiceLedger, dynamodb: Any) -> None:
    # Given 200 invoices accepted at once
    for index in range(200):
        accepted(ledger, f"FY-{index}", at=NOW)
    # Then every shard of the QUEUED list holds some, none more than twice its share
    shards = [raw(dynamodb, f"FY-{index}")["workShard"]["S"] for index in range(200)]
    counts = {shard: shards.count(shard) for shard in set(shards)}
    assert set(counts) == {f"QUEUED#{n}" for n in range(SHARDS)}
    assert max(counts.values()) <= 2 * 200 / SHARDS


# ---- due: the reconciler's read ----


def test_due_reads_each_shard_by_due_time_with_queries_on_the_work_index_only(
    ledger: InvoiceLedger, dynamodb: Any
) -> None:
    # Given QUEUED entries queued 40, 30, 20 and 10 minutes ago, and an INVOICED one
    for age in (40, 30, 20, 10):
        accepted(ledger, f"Q-{age}", at=NOW - age * MINUTE)
    settled(ledger, "INV-1", Invoiced(), at=NOW - 50 * MINUTE)
    requests: list[dict[str, Any]] = []
    dynamodb.meta.events.register(
        "provide-client-params.dynamodb.*", lambda params, **_: requests.append(params)
    )
    # When the entries due by 15 minutes ago are asked for
    found, more = ledger.due(WorkList.QUEUED, due_by=NOW - 15 * MINUTE, limit=10, out_of_time=never)
    # Then the three due ones come back, earliest first, from one Query per shard of ByDue
    assert [entry.key.order_id for entry in found] == ["Q-40", "Q-30", "Q-20"]
    assert more is False
    assert len(requests) == SHARDS
    assert {request["IndexName"] for request in requests} == {WORK_INDEX}
    assert sorted(request["ExpressionAttributeValues"][":shard"]["S"] for request in requests) == [
        f"QUEUED#{n}" for n in range(SHARDS)
    ]


def test_due_takes_an_equal_share_of_its_limit_from_each_shard_and_says_more_is_left(
    ledger: InvoiceLedger,
) -> None:
    # Given 40 due entries (about 10 per shard)
    for index in range(40):
        accepted(ledger, f"FY-{index}", at=NOW - (60 - index) * MINUTE)
    # When at most 8 are asked for
    found, more = ledger.due(WorkList.QUEUED, due_by=NOW, limit=8, out_of_time=never)
    # Then 8 come back, 2 from each shard, and the run knows more are left
    assert len(found) == 8
    per_shard = [shard_of(entry.key, SHARDS) for entry in found]
    assert sorted(per_shard) == sorted(list(range(SHARDS)) * 2)
    assert more is True
    # And a limit of zero reads nothing
    assert ledger.due(WorkList.QUEUED, due_by=NOW, limit=0, out_of_time=never) == ([], True)


def test_due_stops_paging_when_the_time_is_up(ledger: InvoiceLedger, operations: list[str]) -> None:
    # Given due entries, and a run whose time is up after two pages
    for index in range(20):
        accepted(ledger, f"FY-{index}", at=NOW - MINUTE)
    asked = iter([True, True])
    operations.clear()
    # When it asks for them
    found, more = ledger.due(
        WorkList.QUEUED, due_by=NOW, limit=100, out_of_time=lambda: not next(asked, False)
    )
    # Then no page is read past that, and it says more may be left
    assert len(operations) == 2
    assert more is True
    assert len(found) < 20


def test_due_parked_entries_come_due_at_retry_at(ledger: InvoiceLedger) -> None:
    # Given an entry parked for 30 minutes
    message = accepted(ledger, "FY-1", at=NOW)
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=120).granted
    ledger.record(
        message.invoice.key, RetryLater("IN403", "too early", 1800), owner="w-1", now=NOW, ack_id=None
    )
    # Then it is not due before retryAt, and is due from then on, in PARKED (not RETRYING)
    assert ledger.due(WorkList.PARKED, due_by=NOW + 1799, limit=10, out_of_time=never)[0] == []
    (entry,), _ = ledger.due(WorkList.PARKED, due_by=NOW + 1800, limit=10, out_of_time=never)
    assert (entry.key, entry.parked) == (message.invoice.key, True)
    assert ledger.due(WorkList.RETRYING, due_by=NOW + 7200, limit=10, out_of_time=never)[0] == []


def test_mark_reconciled_moves_a_parked_entry_to_retrying_due_now(ledger: InvoiceLedger) -> None:
    # Given a parked entry that came due
    message = accepted(ledger, "FY-1", at=NOW)
    assert ledger.claim(message, message_id="m-1", owner="w-1", now=NOW, lease_seconds=120).granted
    ledger.record(
        message.invoice.key, RetryLater("IN403", "too early", 1800), owner="w-1", now=NOW, ack_id=None
    )
    (entry,), _ = ledger.due(WorkList.PARKED, due_by=NOW + 1800, limit=10, out_of_time=never)
    # When the reconciler marks it as queued again
    assert ledger.mark_reconciled(entry, now=NOW + 1860)
    # Then it left PARKED, and is RETRYING due now: found as lost only if its copy is lost too
    assert ledger.due(WorkList.PARKED, due_by=NOW + 9999, limit=10, out_of_time=never)[0] == []
    (moved,), _ = ledger.due(WorkList.RETRYING, due_by=NOW + 1860, limit=10, out_of_time=never)
    assert (moved.parked, moved.due_at, moved.status) == (False, NOW + 1860, InvoiceStatus.RETRYING)


# ---- listed: the operator's read ----


def test_listed_reads_one_list_in_a_window_newest_first_merged_over_the_shards(
    ledger: InvoiceLedger, operations: list[str]
) -> None:
    # Given QUEUED entries queued 40, 30, 20 and 10 minutes ago, a REJECTED and an INVOICED one
    for age in (40, 30, 20, 10):
        accepted(ledger, f"Q-{age}", at=NOW - age * MINUTE)
    settled(ledger, "REJ-1", Rejected("IN401", "cancelled"), at=NOW - 25 * MINUTE)
    settled(ledger, "INV-1", Invoiced(), at=NOW - 25 * MINUTE)
    operations.clear()
    # When the QUEUED ones queued from 30 to 20 minutes ago (both ends included) are asked for
    found = ledger.listed(
        WorkList.QUEUED, since=NOW - 30 * MINUTE, until=NOW - 20 * MINUTE, newest_first=True
    )
    # Then exactly those two come back, newest first, read by Query alone (never a Scan)
    assert [entry.key.order_id for entry in found] == ["Q-20", "Q-30"]
    assert set(operations) == {"before-call.dynamodb.Query"}
    # And without a window, every QUEUED entry comes back, oldest first; with a limit, the newest
    assert [e.key.order_id for e in ledger.listed(WorkList.QUEUED)] == ["Q-40", "Q-30", "Q-20", "Q-10"]
    assert [e.key.order_id for e in ledger.listed(WorkList.QUEUED, newest_first=True, limit=2)] == [
        "Q-10",
        "Q-20",
    ]


def test_listed_filters_by_the_last_error_code_and_maps_the_whole_entry(ledger: InvoiceLedger) -> None:
    settled(ledger, "CANCELLED-1", Rejected("IN401", "Order already cancelled"), at=NOW - 2 * MINUTE)
    settled(ledger, "UNKNOWN-1", Rejected("IN400", "Order not found"), at=NOW - MINUTE)
    (entry,) = ledger.listed(WorkList.REJECTED, error_code="IN401")
    assert entry.key.order_id == "CANCELLED-1"
    assert entry.last_error == LastError("IN401", "Order already cancelled")
    assert entry == ledger.get(entry.key)


def test_listed_pages_through_each_shard(ledger: InvoiceLedger, dynamodb: Any) -> None:
    # Given nine QUEUED entries, read back one item per page
    for index in range(9):
        accepted(ledger, f"FY-{index}", at=NOW - (60 - index) * MINUTE)
    dynamodb.meta.events.register("provide-client-params.dynamodb.Query", _one_item_per_page)
    # Then all nine come back, in order
    assert [e.key.order_id for e in ledger.listed(WorkList.QUEUED)] == [f"FY-{index}" for index in range(9)]


def _one_item_per_page(params: dict[str, Any], **_: object) -> None:
    params["Limit"] = 1


def test_listed_leaves_an_outage_as_ledger_unavailable(ledger: InvoiceLedger, dynamodb: Any) -> None:
    # Given a QUEUED entry and DynamoDB throttling every Query
    accepted(ledger, "FY-1", at=NOW)

    def throttled(**_: object) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Query")

    dynamodb.meta.events.register_first("before-send.dynamodb.Query", throttled)
    # Then the caller sees the domain's error, not botocore's, from either read
    with pytest.raises(LedgerUnavailableError):
        ledger.listed(WorkList.QUEUED)
    with pytest.raises(LedgerUnavailableError):
        ledger.due(WorkList.QUEUED, due_by=NOW, limit=10, out_of_time=never)
