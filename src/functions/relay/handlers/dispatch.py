"""DispatchFunction: the invoice queue's SQS batches, delivered to Fynd, partial failures reported."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.observability import logger, metrics, tracer
from relay.wiring import dispatch_batch


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the event carries signed invoices.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dispatch_batch(event, lambda: context.get_remaining_time_in_millis() / 1000)
