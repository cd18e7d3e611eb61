"""`relay redrive`: the dead-letter queue back to the invoice queue, with progress and a count."""

import re
import time

import pytest

from factories import invoice
from relay.adapters.queue import CORRELATION_ATTRIBUTE, SqsInvoiceQueue
from relay.domain.messages import QueuedInvoice
from relay_cli.redrive import depth
from relay_cli_support import run_relay
from relay_client import RelayClient

NO_CONSUMER = [{"consume": False}]


def dead_letter(relay: RelayClient, order_ids: list[str]) -> list[QueuedInvoice]:
    """Messages on the dead-letter queue exactly as ingest queued them (its own SQS adapter)."""
    stack = relay.pipeline.stack
    assert stack is not None
    messages = [
        QueuedInvoice(
            invoice=invoice(order_id),
            content_hash=invoice(order_id).content_hash(),
            accepted_at=time.time(),
            correlation_id=f"msg_{order_id}",
        )
        for order_id in order_ids
    ]
    SqsInvoiceQueue(stack.dead_letter_queue_url, relay.pipeline.sqs()).send(messages)
    return messages


@pytest.mark.parametrize("pipeline_config", NO_CONSUMER, indirect=True)
def test_redrive_moves_a_thousand_dead_letters_back_with_progress(relay: RelayClient) -> None:
    # Given 1,000 dead-lettered invoices and no consumer draining the queue
    stack = relay.pipeline.stack
    assert stack is not None
    sqs = relay.pipeline.sqs()
    sent = dead_letter(relay, [f"FY-DLQ-{n:04d}" for n in range(1000)])
    # When an operator first looks with a dry run
    dry = run_relay(relay, "redrive", "--dry-run", "--json")
    # Then it counts them and moves nothing
    assert dry.exit_code == 0
    assert (dry.json()["waiting"], dry.json()["moved"]) == (1000, 0)
    assert depth(sqs, stack.dead_letter_queue_url) == 1000
    # When they redrive
    run = run_relay(relay, "redrive")
    # Then the progress rose to 1,000 as it went, and the count says all moved, none failed
    assert run.exit_code == 0, run.stderr
    progress = [int(moved) for moved in re.findall(r"redrive: (\d+)/1000 moved", run.stderr)]
    assert len(progress) >= 5
    assert progress == sorted(progress)
    assert progress[-1] == 1000
    assert "moved 1000 message(s) to the invoice queue, 0 failed" in run.stdout
    # And the invoice queue holds every one, body and correlation id as ingest wrote them
    assert depth(sqs, stack.dead_letter_queue_url) == 0
    assert depth(sqs, stack.queue_url) == 1000
    received = sqs.receive_message(
        QueueUrl=stack.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    by_order = {message.invoice.orderId: message for message in sent}
    for message in received["Messages"]:
        body = QueuedInvoice.from_body(message["Body"])
        assert body == by_order[body.invoice.orderId]
        assert message["MessageAttributes"][CORRELATION_ATTRIBUTE]["StringValue"] == body.correlation_id


def test_redriven_invoices_are_delivered_and_json_counts_them(relay: RelayClient) -> None:
    # Given three dead-lettered invoices and the consumer running
    dead_letter(relay, ["FY-DLQ-A", "FY-DLQ-B", "FY-DLQ-C"])
    # When an operator redrives at most two, for a script
    first = run_relay(relay, "redrive", "--limit", "2", "--json")
    rest = run_relay(relay, "redrive", "--json")
    # Then the counts parse and add up, and Fynd invoices each of them once
    assert first.exit_code == rest.exit_code == 0
    assert first.json()["moved"] == 2
    assert rest.json()["moved"] == 1
    final = relay.settle("FY-DLQ-A", "FY-DLQ-B", "FY-DLQ-C")
    assert {body["status"] for body in final.values()} == {"INVOICED"}
    for order_id in final:
        assert relay.simulator.state.invoice_count(order_id) == 1
