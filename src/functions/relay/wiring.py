"""Building the relay's parts from settings, once per Lambda instance and only when first needed.

Nothing here runs at import time: clients are created on first use and reused by every
later invocation of the same instance.
"""

import time
import uuid
from functools import cache
from random import random
from typing import TYPE_CHECKING

import boto3
import urllib3
from aws_lambda_powertools.utilities import parameters
from botocore.config import Config

from relay.adapters.fynd import FyndClient
from relay.adapters.ledger import InvoiceLedger
from relay.adapters.queue import SqsInvoiceQueue
from relay.adapters.secrets import SecretsCredentials, webhook_secrets
from relay.domain.acceptance import InvoiceAcceptance
from relay.domain.dispatch import Dispatcher, DispatchSettings
from relay.domain.policy import Backoff, CodePolicy, outage_backoff
from relay.domain.reconcile import Reconciler
from relay.domain.signature import WebhookVerifier
from relay.settings import dispatch_settings, ingest_settings, reconcile_settings, shared_settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

__all__ = [
    "acceptance",
    "dispatch_settings",
    "dispatcher",
    "forget",
    "ingest_settings",
    "ledger",
    "reconciler",
    "webhook_verifier",
]

_AWS_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
LEDGER_CONCURRENCY = 20
"""The dispatcher's ledger writes in flight at once: one Fynd call's worth of records."""


@cache
def _dynamodb() -> "DynamoDBClient":
    # A connection per concurrent write, so none waits for a free one.
    return boto3.client("dynamodb", config=_AWS_CONFIG.merge(Config(max_pool_connections=LEDGER_CONCURRENCY)))


@cache
def _sqs() -> "SQSClient":
    return boto3.client("sqs", config=_AWS_CONFIG)


@cache
def ledger() -> InvoiceLedger:
    return InvoiceLedger(shared_settings().ledger_table_name, _dynamodb())


@cache
def _queue() -> SqsInvoiceQueue:
    return SqsInvoiceQueue(shared_settings().invoice_queue_url, _sqs())


def webhook_verifier() -> WebhookVerifier:
    """Built per request from the cached secret, so a rotation shows up within minutes."""
    return WebhookVerifier(webhook_secrets(ingest_settings().webhook_secret_arn))


@cache
def acceptance() -> InvoiceAcceptance:
    return InvoiceAcceptance(ledger=ledger(), queue=_queue(), clock=time.time)


@cache
def dispatcher() -> Dispatcher:
    settings = dispatch_settings()
    request_seconds = settings.fynd_connect_timeout_seconds + settings.fynd_read_timeout_seconds
    fynd = FyndClient(
        str(settings.fynd_base_url),
        SecretsCredentials(
            settings.fynd_credentials_secret_arn, settings.fynd_location_credentials_secret_arn
        ),
        http=urllib3.PoolManager(maxsize=4),
        timeout=urllib3.Timeout(
            connect=settings.fynd_connect_timeout_seconds, read=settings.fynd_read_timeout_seconds
        ),
    )
    return Dispatcher(
        ledger=ledger(),
        fynd=fynd,
        queue=_queue(),
        policy=CodePolicy(
            Backoff(settings.retry_base_seconds, settings.retry_max_seconds, random),
            settings.too_early_deadline_seconds,
            outage_backoff(settings.retry_base_seconds, random),
        ),
        settings=DispatchSettings(
            lease_seconds=settings.lease_seconds,
            max_receive_count=settings.max_receive_count,
            request_seconds=request_seconds,
            # Room for a token fetch, the call, one refresh and the call again.
            call_budget_seconds=2 * request_seconds,
            record_reserve_seconds=settings.record_reserve_seconds,
            ledger_concurrency=LEDGER_CONCURRENCY,
        ),
        # Unique per Lambda instance: a lease names who holds it.
        owner=f"dispatch-{uuid.uuid4()}",
        clock=time.time,
    )


@cache
def reconciler() -> Reconciler:
    settings = reconcile_settings()
    return Reconciler(
        ledger=ledger(),
        queue=_queue(),
        clock=time.time,
        stall_seconds=settings.stall_seconds,
        max_per_run=settings.max_per_run,
    )


def forget() -> None:
    """Drop every cached client, setting and secret. Lambda never needs this; a local run or a
    test that rebuilds its AWS endpoint inside one process does."""
    for cached in (_dynamodb, _sqs, ledger, _queue, acceptance, dispatcher, reconciler):
        cached.cache_clear()
    for settings_cache in (shared_settings, ingest_settings, dispatch_settings, reconcile_settings):
        settings_cache.cache_clear()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
