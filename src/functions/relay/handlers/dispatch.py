"""DispatchFunction: the invoice queue's SQS batches, delivered to Fynd, partial failures reported.

Each record is parsed with Powertools' `SqsRecordModel`, its body as the queued-invoice model.
A record that is not a queued invoice comes back (and reaches the dead-letter queue after
maxReceiveCount): it never blocks its batch, and neither its body nor the validation error
is logged, since both may quote the invoice.
"""

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Json, ValidationError

from relay.adapters.queue import CORRELATION_ATTRIBUTE
from relay.domain.messages import QueuedInvoice, ReceivedMessage
from relay.observability import count, logger, metrics, tracer
from relay.wiring import dispatch_settings, dispatcher


class QueuedInvoiceRecord(SqsRecordModel):
    body: Json[QueuedInvoice]


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the event carries signed invoices.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dispatch_batch(event, lambda: context.get_remaining_time_in_millis() / 1000)


def dispatch_batch(event: dict[str, Any], seconds_left: Callable[[], float]) -> dict[str, Any]:
    """An SQS event in, the partial batch response (batchItemFailures) out."""
    deliveries: list[ReceivedMessage] = []
    unreadable: list[str] = []
    for record in event.get("Records", []):
        try:
            deliveries.append(_delivery(QueuedInvoiceRecord.model_validate(record)))
        except (ValidationError, ValueError):  # ValueError: a receive count that is no number
            unreadable.append(_unreadable(record))
    failed = dispatcher().dispatch(deliveries, seconds_left) if deliveries else []
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in [*unreadable, *failed]]}


def _delivery(record: QueuedInvoiceRecord) -> ReceivedMessage:
    message = record.body
    attribute = record.messageAttributes.get(CORRELATION_ATTRIBUTE)
    correlation_id = attribute.stringValue if attribute else None
    if not message.correlation_id and correlation_id:
        message = message.model_copy(update={"correlation_id": correlation_id})
    return ReceivedMessage(
        message_id=record.messageId,
        receipt_handle=record.receiptHandle,
        receive_count=int(record.attributes.ApproximateReceiveCount),
        message=message,
    )


def _unreadable(record: dict[str, Any]) -> str:
    attributes = record.get("attributes") if isinstance(record.get("attributes"), dict) else {}
    try:
        receive_count = int(attributes.get("ApproximateReceiveCount", 1))  # type: ignore[union-attr]
    except (TypeError, ValueError):
        receive_count = 1
    last_receive = receive_count >= dispatch_settings().max_receive_count
    logger.error(
        "queue message is not a queued invoice",
        extra={
            "message_id": record.get("messageId"),
            "correlation_id": _correlation(record),
            "dead_lettered": last_receive,
        },
    )
    count("MalformedMessages")
    if last_receive:
        count("DeadLettered", reason="malformed")
    return str(record.get("messageId"))


def _correlation(record: dict[str, Any]) -> str | None:
    """The webhook-id from a record's message attributes, read without trusting its shape."""
    attributes = record.get("messageAttributes")
    attribute = attributes.get(CORRELATION_ATTRIBUTE) if isinstance(attributes, dict) else None
    value = attribute.get("stringValue") if isinstance(attribute, dict) else None
    return value if isinstance(value, str) and value else None
