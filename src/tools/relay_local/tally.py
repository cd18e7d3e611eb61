"""Where every invoice is right now, counted from the places that hold them.

Nothing here counts log lines or keeps its own bookkeeping, so the tally cannot disagree
with the relay: the ledger table says what was received and where each invoice stands,
the queues say what waits on SQS and what was dead-lettered, the event source says how
many batches ran. SQS's numbers are approximate by design (as in AWS); the ledger's are
exact (each scan page is one consistent read: the local DynamoDB serves one request at a time).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

    from relay_local.event_source import EventSourceTally
    from relay_local.stack import LocalStack


@dataclass(frozen=True)
class Tally:
    """The ledger's states, the dead-letter queue, and what SQS and the consumer report.

    A dead-lettered invoice keeps its last ledger state (RETRYING), so it counts in both
    `retrying` and `dead_lettered`: the ledger says what the relay last decided, the
    dead-letter queue that it gave up. An accepted invoice whose message never reached the
    queue (the sender got a 5xx and should resend) stays `queued` with nothing on SQS.
    """

    received: int
    """Invoice keys in the ledger: every invoice accepted with 202, duplicates counted once."""
    queued: int
    in_flight: int
    """Claimed by a dispatcher batch, waiting for Fynd's answer (ledger IN_PROGRESS)."""
    invoiced: int
    rejected: int
    retrying: int
    dead_lettered: int
    """Messages on the dead-letter queue."""
    sqs_waiting: int
    """Messages on the invoice queue a consumer could receive now, or after their delay."""
    sqs_invisible: int
    """Messages received and not deleted: in a running batch, or waiting out a retry back-off."""
    batches: int
    """Dispatcher invocations the local event source has made."""

    def line(self) -> str:
        return (
            f"received {self.received} | queued {self.queued} | in flight {self.in_flight}"
            f" | invoiced {self.invoiced} | rejected {self.rejected} | retrying {self.retrying}"
            f" | dead-lettered {self.dead_lettered}"
            f" || SQS {self.sqs_waiting} waiting, {self.sqs_invisible} invisible | batches {self.batches}"
        )


def read_tally(
    stack: LocalStack, dynamodb: DynamoDBClient, sqs: SQSClient, consumer: EventSourceTally | None
) -> Tally:
    """One reading. A full scan of the ledger: fine for a local run, never do this in AWS."""
    statuses = _ledger_statuses(dynamodb, stack.table_name)
    queue = _queue_depth(sqs, stack.queue_url)
    dead = _queue_depth(sqs, stack.dead_letter_queue_url)
    return Tally(
        received=sum(statuses.values()),
        queued=statuses["QUEUED"],
        in_flight=statuses["IN_PROGRESS"],
        invoiced=statuses["INVOICED"],
        rejected=statuses["REJECTED"],
        retrying=statuses["RETRYING"],
        dead_lettered=sum(dead.values()),
        sqs_waiting=queue["ApproximateNumberOfMessages"] + queue["ApproximateNumberOfMessagesDelayed"],
        sqs_invisible=queue["ApproximateNumberOfMessagesNotVisible"],
        batches=consumer.batches if consumer is not None else 0,
    )


def _ledger_statuses(dynamodb: DynamoDBClient, table: str) -> Counter[str]:
    statuses: Counter[str] = Counter()
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table, ProjectionExpression="#status", ExpressionAttributeNames={"#status": "status"}
    )
    for page in pages:
        statuses.update(item["status"]["S"] for item in page.get("Items", []) if "status" in item)
    return statuses


def _queue_depth(sqs: SQSClient, queue_url: str) -> dict[str, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {name: int(value) for name, value in attributes.items()}
