"""WritebackFunction: the write-back queue's FIFO batches, each invoice's state told to the ERP.

Each record names one invoice key (relay.adapters.writeback_queue); the rules for the batch
are relay.domain.writeback's. The answer is the partial batch response: the messages that
come back, after the back-off the domain set on each.
"""

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.adapters.writeback_queue import key_of
from relay.domain.writeback import WritebackMessage
from relay.observability import count, logger, metrics, tracer
from relay.wiring import writeback


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return write_back_batch(event, lambda: context.get_remaining_time_in_millis() / 1000)


def write_back_batch(event: dict[str, Any], seconds_left: Callable[[], float]) -> dict[str, Any]:
    """An SQS event in, the partial batch response (batchItemFailures) out."""
    messages = [_message(record) for record in event.get("Records", [])]
    report = writeback().write_back(messages, seconds_left)
    if report.written:
        count("WritebackWritten", len(report.written))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in report.failed]}


def _message(record: dict[str, Any]) -> WritebackMessage:
    attributes = record.get("attributes") or {}
    try:
        key = key_of(str(record.get("body", "")))
    except ValueError:  # json's JSONDecodeError too; the body is not logged
        logger.error("write-back message names no invoice key", extra={"message_id": record.get("messageId")})
        count("MalformedMessages")
        key = None
    try:
        receive_count = int(attributes.get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        receive_count = 1
    return WritebackMessage(
        message_id=str(record.get("messageId")),
        receipt_handle=str(record.get("receiptHandle")),
        receive_count=receive_count,
        key=key,
        group_id=str(attributes.get("MessageGroupId") or (str(key) if key else "")),
    )
