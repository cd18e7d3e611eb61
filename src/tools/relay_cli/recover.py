"""`relay recover`: take in what ERPNext gave up sending, from its Webhook Request Log.

The work is the relay's own (relay.domain.recovery): this module only builds it from the
command line's target (the ledger and the queue of `make run` or a stack) and the ERPNext
site (`ERPNEXT_URL`, `ERPNEXT_API_KEY`, `ERPNEXT_API_SECRET`), and turns `--since` into the
text Frappe compares `creation` with: the site's local time, `YYYY-MM-DD HH:MM:SS`.
"""

import contextlib
import logging
import sys
import time
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relay.adapters.frappe_request_log import FrappeRequestLog
from relay.adapters.queue import SqsInvoiceQueue
from relay.domain.intake import InvoiceAcceptance
from relay.domain.recovery import Recovery, RecoveryReport
from relay.observability import logger
from relay_cli.target import Target

WEBHOOK_PATH = "/v1/invoices"


def site_time(text: str, site_timezone: str | None) -> str:
    """`--since` as Frappe's `creation` text. A date is its midnight; a date-time with an offset
    is converted to `site_timezone` (System Settings > Time Zone); without one it is taken as
    the site's time already. ValueError for anything else."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"--since {text!r} is not an ISO date or date-time") from None
        moment = datetime(day.year, day.month, day.day)
    if moment.tzinfo is not None:
        if site_timezone is None:
            raise ValueError("--since has a UTC offset: give --site-timezone (the ERPNext site's time zone)")
        try:
            zone = ZoneInfo(site_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"--site-timezone {site_timezone!r} is not a time zone name") from None
        moment = moment.astimezone(zone).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def recover(
    target: Target,
    *,
    erpnext_url: str,
    api_key: str,
    api_secret: str,
    since: str,
    relay_url: str | None,
) -> tuple[str, RecoveryReport]:
    """Run one recovery; returns the relay URL whose rows were read and the report."""
    # The relay's own log and metric lines (one per invoice taken in) go to stderr: stdout is the report.
    handler = logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(sys.stderr)
    url = relay_url or f"{target.api_url.rstrip('/')}{WEBHOOK_PATH}"
    acceptance = InvoiceAcceptance(
        ledger=target.ledger(), queue=SqsInvoiceQueue(target.queue_url, target.sqs()), clock=time.time
    )
    log = FrappeRequestLog(erpnext_url, api_key, api_secret)
    with contextlib.redirect_stdout(sys.stderr):
        return url, Recovery(log=log, intake=acceptance).recover(url=url, since=since)
