"""RecoverFunction: on a schedule, the invoices ERPNext gave up sending are taken in from its
`Webhook Request Log` (relay.domain.recovery; `relay recover --since` is the same by hand).

Each run reads the failed rows of the last RECOVERY_LOOKBACK_HOURS for the relay's Request
URL and puts their bodies through the webhook's intake: rows taken in by an earlier run are
already known and sent nothing. So a run that fails (the ERP or AWS unavailable, a wrong key)
is retried by the next one: the template turns off Lambda's own retries of the scheduled
event, the event carries nothing to keep in a dead-letter queue, and the failure raises the
function's Errors (docs/runbook.md#erp-recovery-failing). A run that runs out of time before
its last row fails too, after taking in what it reached.
"""

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from relay.domain.errors import RecoveryIncompleteError
from relay.domain.recovery import RowOutcome, window_start
from relay.observability import count, logger, metrics, tracer
from relay.wiring import recover_settings, recovery


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return recover_run(lambda: context.get_remaining_time_in_millis() / 1000)


def recover_run(seconds_left: Callable[[], float], clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """One scheduled run; its counts out (never a body). Raises when the run could not read or
    take in its whole window, so the function's Errors show it."""
    settings = recover_settings()
    if settings.erpnext_url is None:
        logger.info("no ERPNEXT_URL: no Webhook Request Log to recover from")
        return {"skipped": "ERPNEXT_URL is not set"}
    if not settings.webhook_url:
        raise ValueError("RECOVERY_WEBHOOK_URL is not set: no Request URL to read the rows of")
    since = window_start(clock(), settings.lookback_seconds)
    report = recovery(settings).recover(
        url=settings.webhook_url,
        since=since,
        seconds_left=seconds_left,
        reserve_seconds=settings.reserve_seconds,
    )
    for row in report.rows:
        if row.outcome in (RowOutcome.REFUSED, RowOutcome.EMPTY):
            # The invoice needs a fix in the ERP (docs/runbook.md#erp-recovery-failing); never its body
            logger.warning(
                "Webhook Request Log row not taken in",
                extra={
                    "row": row.name,
                    "document": row.reference_document,
                    "outcome": row.outcome,
                    "detail": row.detail,
                },
            )
    count("RecoveryRowsRefused", report.refused)
    count("RecoveryRowsEmpty", report.empty)
    if not report.complete:
        raise RecoveryIncompleteError(
            f"recovery read {report.found} rows since {since} and ran out of time before the last:"
            " the next run reads the rest"
        )
    return {"since": since, **report.summary()}
