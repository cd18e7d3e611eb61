"""IngestFunction: POST /v1/invoices and GET /v1/invoices/{orderId} behind API Gateway (HTTP API)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.api import app
from relay.observability import logger, metrics, tracer

WEBHOOK_ID_PATH = 'headers."webhook-id"'


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the event carries signed invoices.
@logger.inject_lambda_context(correlation_id_path=WEBHOOK_ID_PATH, log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
