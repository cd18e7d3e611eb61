"""WritebackFeedFunction: the ledger's stream (filtered to final-state changes in template.yaml)
to the write-back FIFO queue, one message group per invoice key (relay.domain.writeback)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.domain.writeback import forward, ledger_change
from relay.observability import logger, metrics, tracer
from relay.wiring import writeback_feed_queue


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return feed_batch(event)


def feed_batch(event: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB stream event in; the partial batch response out: the sequence number of the
    first change not queued, where Lambda resumes the shard."""
    changes = [change for record in event.get("Records", []) if (change := ledger_change(record))]
    unsent = forward(changes, writeback_feed_queue())
    return {"batchItemFailures": [{"itemIdentifier": unsent.sequence_number}] if unsent else []}
