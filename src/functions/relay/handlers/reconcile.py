"""ReconcileFunction: every few minutes, unfinished invoices that stopped moving are queued again."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.observability import logger, metrics, tracer
from relay.wiring import reconciler


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # What the run requeued: keys and counts only, never an invoice.
    return reconciler().reconcile(lambda: context.get_remaining_time_in_millis() / 1000).as_dict()
