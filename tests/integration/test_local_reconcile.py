"""The reconciler through the local pipeline: an invoice whose queue message is gone reaches
Fynd once the scheduled ReconcileFunction runs (breach 11 part 2, and breach 2's lost message).

The faults are made where they happen in AWS: the queue loses the message (purged), and the
clock is moved by writing the entry's timestamps back, as if the window had passed.
"""

import json
import time
from typing import Any

import pytest

from relay.adapters.work_index import DEFAULT_WORK_SHARDS, work_shard
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import WorkList
from relay_client import RelayClient
from relay_local.events import EVENTS_DIR

MINUTE = 60.0
SCHEDULED = json.loads((EVENTS_DIR / "reconcile-scheduled.json").read_text())


def reconcile(relay: RelayClient) -> Any:
    return relay.pipeline.functions["ReconcileFunction"].invoke(SCHEDULED)


def age_entry(relay: RelayClient, pk: str, *, minutes: float, **timestamps: float) -> None:
    """Move the entry's updatedAt (and any other timestamp given) `minutes` into the past, and
    its place in the work index (dueAt) with its status' clock: retryAt if given, else updatedAt."""
    stack = relay.pipeline.stack
    assert stack is not None
    now = time.time()
    values = {
        "updatedAt": now - minutes * MINUTE,
        **{name: now - ago * MINUTE for name, ago in timestamps.items()},
    }
    values["dueAt"] = values.get("retryAt", values["updatedAt"])
    relay.pipeline.dynamodb().update_item(
        TableName=stack.table_name,
        Key={"pk": {"S": pk}},
        UpdateExpression="SET " + ", ".join(f"{name} = :{name}" for name in values),
        ExpressionAttributeValues={f":{name}": {"N": f"{value:.3f}"} for name, value in values.items()},
    )


def lose_every_message(relay: RelayClient) -> None:
    stack = relay.pipeline.stack
    assert stack is not None
    relay.pipeline.sqs().purge_queue(QueueUrl=stack.queue_url)


@pytest.mark.parametrize("pipeline_config", [{"consume": False}], indirect=True)
def test_breach_11_an_accepted_invoice_whose_message_never_arrived_reaches_fynd(relay: RelayClient) -> None:
    # Given an invoice ingest accepted (202) but whose message never reached the queue, as
    # when ingest dies between the ledger transaction and the send, 20 minutes ago
    accepted = relay.post({"orderId": "FY-REC-1", "invoiceNumber": "INV-REC-1", "invoiceType": "sale"})
    assert accepted.status == 202
    lose_every_message(relay)
    age_entry(relay, "FY-REC-1#sale", minutes=20)
    relay.pipeline.start_consumer()
    # When the scheduled reconciler runs
    answer = reconcile(relay)
    # Then it queued the invoice again, and Fynd gets it once
    assert answer == {
        "requeued": {"QUEUED": ["FY-REC-1#sale"]},
        "returned": 0,
        "failed": [],
        "complete": True,
    }
    assert relay.settle("FY-REC-1")["FY-REC-1"]["status"] == "INVOICED"
    assert relay.simulator.state.invoice_count("FY-REC-1") == 1
    # And the next run finds nothing left to do
    assert reconcile(relay)["requeued"] == {}


@pytest.mark.parametrize("pipeline_config", [{"consume": False}], indirect=True)
def test_a_retrying_invoice_whose_message_vanished_reaches_fynd(relay: RelayClient) -> None:
    # Given an invoice the dispatcher recorded RETRYING, due 20 minutes ago, whose message is gone
    # (a copy deleted as BUSY while the holder's visibility change failed)
    assert (
        relay.post({"orderId": "FY-REC-2", "invoiceNumber": "INV-REC-2", "invoiceType": "sale"}).status == 202
    )
    lose_every_message(relay)
    stack = relay.pipeline.stack
    assert stack is not None
    relay.pipeline.dynamodb().update_item(
        TableName=stack.table_name,
        Key={"pk": {"S": "FY-REC-2#sale"}},
        UpdateExpression="SET #s = :r, workShard = :w, lastErrorCode = :c, lastErrorMessage = :c",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":r": {"S": "RETRYING"},
            ":w": {
                "S": work_shard(WorkList.RETRYING, InvoiceKey.parse("FY-REC-2#sale"), DEFAULT_WORK_SHARDS)
            },
            ":c": {"S": "fynd_unavailable"},
        },
    )
    age_entry(relay, "FY-REC-2#sale", minutes=40, retryAt=20)
    relay.pipeline.start_consumer()
    # When the scheduled reconciler runs
    answer = reconcile(relay)
    # Then the invoice is queued again from its stored copy and invoiced
    assert answer["requeued"] == {"RETRYING": ["FY-REC-2#sale"]}
    assert relay.settle("FY-REC-2")["FY-REC-2"]["status"] == "INVOICED"


@pytest.mark.parametrize("pipeline_config", [{"consume": False}], indirect=True)
def test_breach_11_an_invoice_waiting_in_the_queue_is_not_requeued(relay: RelayClient) -> None:
    # Given an invoice accepted just now, its message waiting on the queue (no consumer yet)
    assert (
        relay.post({"orderId": "FY-REC-3", "invoiceNumber": "INV-REC-3", "invoiceType": "sale"}).status == 202
    )
    # When the reconciler runs, Then it leaves it alone: it is within the window
    assert reconcile(relay) == {"requeued": {}, "returned": 0, "failed": [], "complete": True}
    assert len(relay.receive(1)) == 1
