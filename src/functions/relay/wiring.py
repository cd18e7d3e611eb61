"""Building the relay's parts from settings, once per Lambda instance and only when first needed.

Nothing here runs at import time: clients are created on first use and reused by every
later invocation of the same instance.

Ingest's time budget. IngestFunction has `Timeout: 10` in template.yaml. Ingest's AWS clients
make one attempt per call (botocore retries off), so a call takes at most INGEST_CONNECT_TIMEOUT
+ INGEST_READ_TIMEOUT = INGEST_ATTEMPT_SECONDS = 0.4 + 1.5 = 1.9 s. A POST reads the signing
secret (one call, cached for 5 minutes) and, for more than 50 invoices, the ledger (one
BatchGetItem; smaller webhooks are written first and read only if a key is already recorded,
see relay.domain.intake). It then writes the ledger with at most two TransactWriteItems (the
ledger stores the bodies of more than 50 new invoices ahead of the state transaction) and
sends the messages, one SendMessageBatch attempt per batch, the batches at once
(INGEST_SEND_BUDGET_SECONDS). The writes start only while the invocation has
INGEST_WRITE_RESERVE_SECONDS (2 x 1.9 + 1.9 = 5.7 s) left beyond INGEST_ANSWER_MARGIN_SECONDS
(0.5 s). So the worst POST is

    GetSecretValue 1.9 + BatchGetItem 1.9 + writes and send 5.7 + answer margin 0.5 = 10.0 s <= 10 s,

and a ledger write is never cut off by the timeout before its messages are queued or the
sender is told 503. After a failed send, ingest marks each entry SQS did not take (one
UpdateItem each) only while a whole attempt still fits, so the sum stands; an entry left
unmarked is queued again by the sender's resend of the same delivery, or by the reconciler
(relay.domain.intake). (A write refused because a key is recorded leaves at least 1.9 s +
margin for the re-read, after which the check before the next write may refuse: 503, nothing
written.) `ingest_worst_case_seconds()` is that sum; a test holds it to the template. A
throttled, refused or slow AWS call is answered 503 with Retry-After: the ERP's retry is the
resend (entries SQS refused stay QUEUED, marked, and the retry queues them again; the reconciler too).
INGEST_AWS_READ_TIMEOUT_SECONDS (IngestSettings) lengthens the calls for an emulator slower
than AWS only; the budget kept stays the one above.
"""

import time
import uuid
from functools import cache
from random import random
from typing import TYPE_CHECKING

import boto3
import urllib3
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.config import Config

from relay.adapters.callback import SignedCallback
from relay.adapters.erpnext import ErpNextSync
from relay.adapters.frappe_request_log import FrappeRequestLog
from relay.adapters.fynd import FyndClient
from relay.adapters.ledger import TRANSACTION_LIMIT, InvoiceLedger
from relay.adapters.queue import SqsInvoiceQueue
from relay.adapters.queue_age import CloudWatchQueueAge
from relay.adapters.rate import DynamoRateLimiter
from relay.adapters.secrets import SecretsCredentials, callback_key, erpnext_token, webhook_secret_entries
from relay.adapters.writeback_queue import SqsWritebackQueue
from relay.domain.dispatch import Dispatcher, DispatchLimits
from relay.domain.intake import InvoiceAcceptance
from relay.domain.invoice import InvoiceKey
from relay.domain.policy import Backoff, code_policy
from relay.domain.reconcile import Budgets, Reconciler
from relay.domain.recovery import Recovery
from relay.domain.signatures import RequestVerifier, SigningSecrets
from relay.domain.standard_webhooks import WebhookVerifier
from relay.domain.writeback import Writeback, WritebackTarget
from relay.observability import count, logger
from relay.settings import (
    RecoverSettings,
    WritebackSettings,
    dispatch_settings,
    ingest_settings,
    reconcile_settings,
    recover_settings,
    shared_settings,
    writeback_feed_settings,
    writeback_settings,
)

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

__all__ = [
    "acceptance",
    "dispatch_settings",
    "dispatcher",
    "forget",
    "ingest_ledger",
    "ingest_settings",
    "ingest_worst_case_seconds",
    "ledger",
    "reconciler",
    "recover_settings",
    "recovery",
    "request_verifier",
    "webhook_verifier",
    "writeback",
    "writeback_feed_queue",
]

_AWS_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
LEDGER_CONCURRENCY = 20
"""The dispatcher's ledger writes in flight at once: one Fynd call's worth of records."""
FYND_CALLS_IN_FLIGHT = 16
"""Fynd calls of one invocation in flight at once; the shared rate limiter paces them all. A
lost answer holds its thread for the read timeout and then its orders' reads: in a backlog
(docs/scale.md, 200,000 invoices from the batching ERP, the first version of the read at once)
8 used 17.8 of Fynd's 20 calls/s and left some lost answers to the next batch (their p99 602
s); 16 used 18.9 (p99 25 s)."""
FYND_READS_IN_FLIGHT = FYND_CALLS_IN_FLIGHT
"""Shipment Info reads in flight at once per instance (for all its calls together)."""
FYND_CONNECTIONS = FYND_CALLS_IN_FLIGHT + FYND_READS_IN_FLIGHT
"""Connections to Fynd per instance: every call and every read in flight has its own."""

INGEST_CONNECT_TIMEOUT = 0.4
INGEST_READ_TIMEOUT = 1.5
INGEST_ATTEMPT_SECONDS = INGEST_CONNECT_TIMEOUT + INGEST_READ_TIMEOUT
"""The longest one AWS call of ingest can take: a single attempt, connect then read."""
INGEST_SEND_ATTEMPTS = 1
"""SendMessageBatch attempts per batch inside the budget: the sender's retry is the resend."""
INGEST_SEND_PAUSE_SECONDS = 0.1
"""SqsInvoiceQueue's pause before a resend, were a second attempt budgeted."""
INGEST_SEND_BUDGET_SECONDS = (
    INGEST_SEND_ATTEMPTS * INGEST_ATTEMPT_SECONDS + (INGEST_SEND_ATTEMPTS - 1) * INGEST_SEND_PAUSE_SECONDS
)
INGEST_LEDGER_WRITES = 2
"""TransactWriteItems calls of one accept at most: bodies ahead (over 50 new invoices), then states."""
INGEST_WRITE_RESERVE_SECONDS = INGEST_LEDGER_WRITES * INGEST_ATTEMPT_SECONDS + INGEST_SEND_BUDGET_SECONDS
"""What the ledger writes and the whole send take at worst: kept before the first write."""
INGEST_ANSWER_MARGIN_SECONDS = 0.5
"""Kept back from the invocation's remaining time for validation, the answer and the logs."""
_INGEST_AWS_CONFIG = Config(
    connect_timeout=INGEST_CONNECT_TIMEOUT,
    read_timeout=INGEST_READ_TIMEOUT,
    retries={"mode": "standard", "total_max_attempts": 1},
    # A connection for each batch SqsInvoiceQueue sends at once (100 invoices: 10 to 12 batches).
    max_pool_connections=16,
)


def ingest_worst_case_seconds() -> float:
    """The longest a POST can run: the secret's read, the ledger's read, the writes and the send,
    the answer margin."""
    return (
        INGEST_ATTEMPT_SECONDS
        + INGEST_ATTEMPT_SECONDS
        + INGEST_WRITE_RESERVE_SECONDS
        + INGEST_ANSWER_MARGIN_SECONDS
    )


@cache
def _dynamodb() -> "DynamoDBClient":
    # A connection per concurrent write, so none waits for a free one.
    # A connection per concurrent ledger write, and per call or read asking the rate limiter.
    connections = LEDGER_CONCURRENCY + 2 * FYND_CALLS_IN_FLIGHT
    return boto3.client("dynamodb", config=_AWS_CONFIG.merge(Config(max_pool_connections=connections)))


@cache
def _sqs() -> "SQSClient":
    return boto3.client("sqs", config=_AWS_CONFIG)


@cache
def _cloudwatch() -> "CloudWatchClient":
    return boto3.client("cloudwatch", config=_AWS_CONFIG)


def _ingest_aws_config() -> Config:
    """_INGEST_AWS_CONFIG, with a longer read timeout only where IngestSettings says so (never in AWS)."""
    slower = ingest_settings().aws_read_timeout_seconds
    return _INGEST_AWS_CONFIG.merge(Config(read_timeout=slower)) if slower else _INGEST_AWS_CONFIG


@cache
def _ingest_dynamodb() -> "DynamoDBClient":
    return boto3.client("dynamodb", config=_ingest_aws_config())


@cache
def _ingest_sqs() -> "SQSClient":
    return boto3.client("sqs", config=_ingest_aws_config())


@cache
def _ingest_secrets() -> SecretsProvider:
    return SecretsProvider(boto_config=_ingest_aws_config())


@cache
def ledger() -> InvoiceLedger:
    settings = shared_settings()
    return InvoiceLedger(settings.ledger_table_name, _dynamodb(), shards=settings.work_index_shards)


@cache
def ingest_ledger() -> InvoiceLedger:
    """The ledger as ingest reads and writes it: within ingest's time budget (see above);
    one BatchGetItem per read, keys it leaves unread are an outage (503), not a second call."""
    settings = shared_settings()
    return InvoiceLedger(
        settings.ledger_table_name, _ingest_dynamodb(), read_rounds=1, shards=settings.work_index_shards
    )


@cache
def _queue() -> SqsInvoiceQueue:
    return SqsInvoiceQueue(shared_settings().invoice_queue_url, _sqs())


def request_verifier() -> RequestVerifier:
    """Standard Webhooks and the enabled presets, built per request from the cached secret, so a
    rotation shows up within minutes."""
    entries = webhook_secret_entries(ingest_settings().webhook_secret_arn, _ingest_secrets())
    secrets = SigningSecrets.from_entries(entries)
    for name, reason in secrets.ignored.items():
        logger.warning("signing secret entry ignored", extra={"entry": name, "reason": reason})
    return RequestVerifier(secrets)


def webhook_verifier() -> WebhookVerifier:
    """Standard Webhooks alone, for the status API: a preset cannot sign a GET."""
    return request_verifier().standard_webhooks()


@cache
def acceptance() -> InvoiceAcceptance:
    queue = SqsInvoiceQueue(
        shared_settings().invoice_queue_url,
        _ingest_sqs(),
        pause=INGEST_SEND_PAUSE_SECONDS,
        budget_seconds=INGEST_SEND_BUDGET_SECONDS,
        attempt_seconds=INGEST_ATTEMPT_SECONDS,
    )
    return InvoiceAcceptance(
        ledger=ingest_ledger(),
        queue=queue,
        clock=time.time,
        reserve_seconds=INGEST_WRITE_RESERVE_SECONDS,
        mark_seconds=INGEST_ATTEMPT_SECONDS,
        # Bodies and entries of up to 50 invoices fit one transaction, so a refused write leaves nothing.
        optimistic_limit=TRANSACTION_LIMIT // 2,
    )


@cache
def dispatcher() -> Dispatcher:
    settings = dispatch_settings()
    request_seconds = settings.fynd_connect_timeout_seconds + settings.fynd_read_timeout_seconds
    fynd = FyndClient(
        str(settings.fynd_base_url),
        SecretsCredentials(
            settings.fynd_credentials_secret_arn, settings.fynd_location_credentials_secret_arn
        ),
        http=urllib3.PoolManager(maxsize=FYND_CONNECTIONS),
        timeout=urllib3.Timeout(
            connect=settings.fynd_connect_timeout_seconds, read=settings.fynd_read_timeout_seconds
        ),
    )
    return Dispatcher(
        ledger=ledger(),
        fynd=fynd,
        queue=_queue(),
        policy=code_policy(
            base_seconds=settings.retry_base_seconds,
            max_seconds=settings.retry_max_seconds,
            too_early_deadline_seconds=settings.too_early_deadline_seconds,
            jitter=random,
        ),
        settings=DispatchLimits(
            lease_seconds=settings.lease_seconds,
            max_receive_count=settings.max_receive_count,
            request_seconds=request_seconds,
            # Room for a token fetch, the call, one refresh and the call again.
            call_budget_seconds=2 * request_seconds,
            record_reserve_seconds=settings.record_reserve_seconds,
            ledger_concurrency=LEDGER_CONCURRENCY,
            fynd_concurrency=FYND_READS_IN_FLIGHT,
            call_concurrency=FYND_CALLS_IN_FLIGHT,
        ),
        limiter=_rate_limiter(),
        read_limiter=_read_limiter(),
        # Unique per Lambda instance: a lease names who holds it.
        owner=f"dispatch-{uuid.uuid4()}",
        clock=time.time,
    )


def _rate_limiter() -> DynamoRateLimiter | None:
    settings = dispatch_settings()
    if settings.fynd_rate_table_name is None:
        return None
    return DynamoRateLimiter(
        settings.fynd_rate_table_name, _dynamodb(), calls_per_second=settings.fynd_calls_per_second
    )


def _read_limiter() -> DynamoRateLimiter | None:
    """Shipment Info's own pace in the same table (its items keyed apart), or None: the calls' pace."""
    settings = dispatch_settings()
    if settings.fynd_rate_table_name is None or settings.fynd_reads_per_second == 0:
        return None
    return DynamoRateLimiter(
        settings.fynd_rate_table_name, _dynamodb(), calls_per_second=settings.fynd_reads_per_second
    )


@cache
def reconciler() -> Reconciler:
    settings = reconcile_settings()
    return Reconciler(
        ledger=ledger(),
        queue=_queue(),
        queue_age=CloudWatchQueueAge(settings.invoice_queue_url, _cloudwatch()),
        clock=time.time,
        stall_seconds=settings.stall_seconds,
        budgets=Budgets(lost=settings.max_per_run, parked=settings.max_parked_per_run),
        concurrency=LEDGER_CONCURRENCY,
    )


@cache
def _recovery_intake() -> InvoiceAcceptance:
    """The intake a webhook goes through, with the standard clients: a scheduled run is not
    answering a sender, so it has no ingest budget to keep."""
    return InvoiceAcceptance(ledger=ledger(), queue=_queue(), clock=time.time)


@cache
def _recovery_http() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=urllib3.Retry(total=2, backoff_factor=0.5))


def recovery(settings: RecoverSettings) -> Recovery:
    """Recovery over the site of `settings` (ERPNEXT_URL set), its key pair read now from the
    secret (cached five minutes): TargetDown when it cannot be read, and the run fails."""
    assert settings.erpnext_url is not None, "no ERPNEXT_URL: nothing to recover from"
    token = erpnext_token(settings.erpnext_credentials_secret_arn or "")
    api_key, _, api_secret = token.partition(":")
    log = FrappeRequestLog(
        str(settings.erpnext_url),
        api_key,
        api_secret,
        http=_recovery_http(),
        timeout_seconds=settings.read_timeout_seconds,
    )
    return Recovery(log=log, intake=_recovery_intake())


WRITEBACK_REQUESTS_PER_MESSAGE = {"erpnext": 4, "callback": 1}
"""The most requests one outcome costs a target: ERPNext GET, POST answered 409, GET, PUT."""


@cache
def writeback() -> Writeback:
    settings = writeback_settings()
    targets = _writeback_targets(settings)
    request_seconds = settings.connect_timeout_seconds + settings.read_timeout_seconds
    return Writeback(
        ledger=ledger(),
        targets=targets,
        queue=SqsWritebackQueue(settings.writeback_queue_url, _sqs()),
        backoff=Backoff(settings.retry_base_seconds, settings.retry_max_seconds, random, spread=0.25),
        # A ledger read, every target's requests at their timeouts, and a second to answer.
        message_seconds=5
        + sum(WRITEBACK_REQUESTS_PER_MESSAGE[target.name] for target in targets) * request_seconds
        + 1,
        on_failure=_writeback_failed,
    )


def _writeback_targets(settings: WritebackSettings) -> list[WritebackTarget]:
    """ERPNext and the callback, each only when its URL is set; their secrets are read on use
    (cached five minutes), and a secret that cannot be read now is TargetDown: retried."""
    timeout = urllib3.Timeout(connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds)
    targets: list[WritebackTarget] = []
    if settings.erpnext_url and settings.erpnext_credentials_secret_arn:
        erpnext_arn = settings.erpnext_credentials_secret_arn
        targets.append(
            ErpNextSync(str(settings.erpnext_url), lambda: erpnext_token(erpnext_arn), timeout=timeout)
        )
    if settings.callback_url and settings.callback_secret_arn:
        callback_arn = settings.callback_secret_arn
        targets.append(
            SignedCallback(str(settings.callback_url), lambda: callback_key(callback_arn), timeout=timeout)
        )
    return targets


def _writeback_failed(key: InvoiceKey, target: str, error: Exception) -> None:
    logger.warning(
        "write-back failed; the message comes back after a back-off",
        extra={"invoice_key": str(key), "target": target, "kind": type(error).__name__, "detail": str(error)},
    )
    count("WritebackFailures", target=target, kind=type(error).__name__)


@cache
def writeback_feed_queue() -> SqsWritebackQueue:
    return SqsWritebackQueue(writeback_feed_settings().writeback_queue_url, _sqs())


def forget() -> None:
    """Drop every cached client, setting and secret. Lambda never needs this; a local run or a
    test that rebuilds its AWS endpoint inside one process does."""
    for cached in (
        _dynamodb,
        _sqs,
        _cloudwatch,
        ledger,
        _queue,
        acceptance,
        dispatcher,
        reconciler,
        _ingest_dynamodb,
        _ingest_sqs,
        _ingest_secrets,
        ingest_ledger,
        writeback,
        writeback_feed_queue,
        _recovery_intake,
        _recovery_http,
    ):
        cached.cache_clear()
    for settings_cache in (
        shared_settings,
        ingest_settings,
        dispatch_settings,
        reconcile_settings,
        writeback_settings,
        writeback_feed_settings,
        recover_settings,
    ):
        settings_cache.cache_clear()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
