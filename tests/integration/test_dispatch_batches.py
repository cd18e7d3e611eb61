"""The dispatcher batch by batch, as Lambda's event source hands it SQS batches: duplicates in
a batch, across batches and across concurrent dispatchers never reach Fynd twice, and
batchItemFailures names only messages of its own batch."""

import json
import threading
import time

import pytest

from factories import invoice_dict
from relay import wiring
from relay.domain.messages import QueuedInvoice
from relay.handlers.dispatch import lambda_handler as dispatch_handler
from relay.wiring import ledger
from relay_client import FAST_RETRIES, RelayClient
from relay_local.lambda_context import LambdaContext
from relay_local.pipeline import PipelineConfig
from relay_local.signing import new_secret


@pytest.fixture
def pipeline_config() -> PipelineConfig:
    # No consumer: each test hands the dispatcher its batches itself.
    return PipelineConfig(webhook_secret=new_secret(), environment=FAST_RETRIES, consume=False)


def fynd_calls(relay: RelayClient) -> int:
    return len(relay.simulator.state.calls())


def test_copies_inside_one_batch_reach_fynd_once(relay: RelayClient) -> None:
    # Given two messages of one invoice before either was dispatched (a retry after a failed
    # send, the reconciler)
    relay.post(invoice_dict("A"))
    relay.queue_again("A")
    batch = relay.receive(2)
    # When both arrive in one batch
    failed = relay.dispatch(*batch)
    # Then Fynd sees one call with the order once, and both messages are done
    assert failed == []
    assert [call.order_ids for call in relay.simulator.state.calls()] == [("A",)]
    assert relay.status("A").body["status"] == "INVOICED"


def test_copies_in_later_batches_are_suppressed_by_the_ledger(relay: RelayClient) -> None:
    relay.post(invoice_dict("A"))
    relay.queue_again("A")
    first, second = relay.receive(2)
    assert relay.dispatch(first) == []
    # When the second copy arrives in a later batch
    assert relay.dispatch(second) == []
    # Then it never reaches Fynd
    assert fynd_calls(relay) == 1
    assert relay.simulator.state.invoice_count("A") == 1


def test_concurrent_dispatchers_never_both_send(relay: RelayClient) -> None:
    # Given two copies of one invoice, and a Fynd that takes a moment to answer
    relay.post(invoice_dict("A"))
    relay.queue_again("A")
    first, second = relay.receive(2)
    relay.simulator.state.add_faults([{"kind": "latency", "seconds": 1.5}])
    # When one dispatcher is sending it and a second one receives the other copy
    results: dict[str, list[str]] = {}
    worker = threading.Thread(target=lambda: results.update(first=relay.dispatch(first)))
    worker.start()
    deadline = time.monotonic() + 5
    while relay.status("A").body["status"] != "IN_PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.05)
    results["second"] = relay.dispatch(second)
    worker.join()
    # Then the second drops its copy (the first's message stays until the invoice is final)
    assert results == {"first": [], "second": []}
    # And Fynd is called once
    assert fynd_calls(relay) == 1
    assert relay.status("A").body["status"] == "INVOICED"


def test_a_crashed_workers_claim_expires_with_its_lease(relay: RelayClient) -> None:
    # Given a dispatcher claimed the invoice and died before recording anything
    relay.post(invoice_dict("A"))
    (record,) = relay.receive(1)
    crashed = ledger().claim(
        QueuedInvoice.from_body(record["body"]),
        message_id=record["messageId"],
        owner="crashed",
        now=time.time(),
        lease_seconds=1,
    )
    assert crashed.granted
    # When its message returns after the lease has run out (visibility timeout > lease)
    time.sleep(1.1)
    # Then another dispatcher claims it and sends it
    assert relay.dispatch(record) == []
    final = relay.status("A").body
    assert (final["status"], final["attempts"]) == ("INVOICED", 2)
    assert relay.simulator.state.invoice_count("A") == 1


def test_a_ledger_outage_fails_its_messages_not_the_invocation(relay: RelayClient) -> None:
    # Given two queued invoices, and then the ledger table is gone
    relay.post([invoice_dict("A"), invoice_dict("B")])
    batch = relay.receive(2)
    assert relay.pipeline.stack is not None
    relay.pipeline.dynamodb().delete_table(TableName=relay.pipeline.stack.table_name)
    # When the batch is dispatched
    failed = relay.dispatch(*batch)
    # Then the invocation succeeds, both messages come back, and nothing reached Fynd
    assert sorted(failed) == sorted(record["messageId"] for record in batch)
    assert fynd_calls(relay) == 0


def test_invoices_whose_call_would_outlast_the_invocation_come_back(relay: RelayClient) -> None:
    # Given one invoice more than the calls in flight at once, each for its own location (a call
    # each), and a Fynd that takes 3 s per call
    orders = [f"L{n}" for n in range(1, wiring.FYND_CALLS_IN_FLIGHT + 2)]
    relay.post([invoice_dict(order, locationCode=f"WH-{order}") for order in orders])
    batch = relay.receive(len(orders))
    relay.simulator.state.add_faults([{"kind": "latency", "seconds": 3}] * len(orders))
    # When the invocation has time for one round of calls only: a call needs one request
    # (connect 1 + read 3 s in FAST_RETRIES) plus the 1 s record reserve, and 7.5 s less the
    # first round's 3 s leaves 4.5 s (the 2.5 s to spare absorb moto's slow claims)
    assert relay.pipeline.dispatch is not None
    context = relay.pipeline.dispatch.new_context()
    context = LambdaContext(**{**context.__dict__, "deadline_monotonic": time.monotonic() + 7.5})
    answer = dispatch_handler({"Records": batch}, context)
    # Then the last call is neither started nor claimed (a second round cannot fit: 3 + 3 + 1 s
    # of 7.5). A loaded machine may leave calls of the first round without time too, before
    # their claims (QUEUED) or after them (RETRYING), or keep a call's answer past its 3 s read
    # timeout: that order reached Fynd, its answer was lost, and it waits RETRYING for a read
    # before any resend. Every invoice not sent returns for the next invocation in a fresh
    # message (no receive spent, no batch item failure)
    assert answer["batchItemFailures"] == []
    reached = {order for call in relay.simulator.state.calls() for order in call.order_ids}
    statuses = {order: relay.status(order).body["status"] for order in orders}
    invoiced = {order for order, status in statuses.items() if status == "INVOICED"}
    assert invoiced <= reached < set(orders)
    assert {statuses[order] for order in reached - invoiced} <= {"RETRYING"}
    deferred = set(orders) - reached
    assert {statuses[order] for order in deferred} <= {"QUEUED", "RETRYING"}
    assert "QUEUED" in {statuses[order] for order in deferred}
    again = relay.receive(len(orders) - len(invoiced))
    fresh = {
        json.loads(m["body"])["invoice"]["orderId"]: m
        for m in again
        if m["attributes"]["ApproximateReceiveCount"] == "1"
    }
    assert deferred <= set(fresh)
    assert not {fresh[order]["messageId"] for order in deferred} & {record["messageId"] for record in batch}


def test_batch_item_failures_name_only_this_batchs_messages(relay: RelayClient) -> None:
    # Given a batch with one invoice Fynd answers IN403 (not confirmed yet), one it accepts, and
    # one unreadable message (a per-order answer: the calls go out in parallel, in any order)
    relay.simulator.state.configure_order("SLOW", "pending")
    relay.post(invoice_dict("OK"))
    ok = relay.receive(1)[0]
    relay.post(invoice_dict("SLOW", locationCode="WH-9"))
    slow = relay.receive(1)[0]
    garbage = {**ok, "messageId": "garbage-1", "body": "not a queued invoice"}
    # When dispatched together
    failed = relay.dispatch(slow, ok, garbage)
    # Then exactly the unreadable message comes back (the IN403 one waits as a fresh message)
    assert failed == ["garbage-1"]
    assert set(failed) <= {record["messageId"] for record in (slow, ok, garbage)}
    assert relay.status("OK").body["status"] == "INVOICED"
    assert relay.status("SLOW").body["status"] == "RETRYING"


@pytest.mark.parametrize("attempt_ordinal", ["last-but-one"])
def test_early_order_is_requeued_fresh_instead_of_dead_lettered(
    relay: RelayClient, attempt_ordinal: str
) -> None:
    # Given a not-yet-confirmed order whose message is on its last-but-one receive
    relay.simulator.state.configure_order("PENDING-1", "pending")
    relay.post(invoice_dict("PENDING-1"))
    (record,) = relay.receive(1)
    max_receive = int(relay.pipeline.stack.parameters["MaxReceiveCount"])  # type: ignore[union-attr]
    record["attributes"]["ApproximateReceiveCount"] = str(max_receive - 1)
    # When Fynd answers IN403 again
    failed = relay.dispatch(record)
    # Then the old message is done and a fresh copy waits on the queue (receive count starts over)
    assert failed == []
    (fresh,) = relay.receive(1)
    assert fresh["attributes"]["ApproximateReceiveCount"] == "1"
    assert json.loads(fresh["body"])["invoice"]["orderId"] == "PENDING-1"
    assert relay.status("PENDING-1").body["status"] == "RETRYING"
