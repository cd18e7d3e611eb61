"""The ingest function in-process: API Gateway (HTTP API, payload 2.0) events built by
`relay_local.events.http_event`, resolved by the real `relay.api.app`, over in-memory fakes of
the ledger and the queue put where `relay.wiring` would build the AWS ones.

The queue keeps every message as the body SQS would hold (`QueuedInvoice.to_body`), so what a
dispatcher later reads is exactly what ingest wrote.
"""

import base64
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fakes import FakeClock, Faults, InMemoryLedger, RecordingQueue
from relay import wiring
from relay.api import app
from relay.domain.intake import InvoiceAcceptance
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import LedgerEntry
from relay.domain.signatures import RequestVerifier, SigningSecrets
from relay.domain.standard_webhooks import WebhookVerifier
from relay.settings import IngestSettings
from relay_local.events import http_event
from relay_local.lambda_context import LambdaContext
from relay_local.signing import new_secret, signed_headers, status_headers

INGEST_TIMEOUT_SECONDS = 10.0


class CountedReads:
    """A ledger (the fake or the DynamoDB one), counting the reads acceptance makes of it."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    def get_many(self, keys: Iterable[InvoiceKey]) -> dict[InvoiceKey, LedgerEntry]:
        self.reads += 1
        return self.ledger.get_many(keys)


class StaleFirstRead(CountedReads):
    """A ledger as a request sees it when another request writes between its read and its
    write: the first `get_many` answers as if nothing were recorded yet."""

    def get_many(self, keys: Iterable[InvoiceKey]) -> dict[InvoiceKey, LedgerEntry]:
        if self.reads == 0:
            self.reads = 1
            return {}
        return super().get_many(keys)


def queued_bodies(queue: RecordingQueue) -> list[str]:
    """Every message body on the queue, as SQS holds it."""
    return [held.body for held in queue.messages.values()]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class Ingest:
    """Signed (or not) POSTs and GETs against the real API, in this process."""

    def __init__(self, ledger: Any, queue: Any, secret: str, faults: Faults) -> None:
        self.ledger = ledger
        self.queue = queue
        self.secret = secret
        self.faults = faults
        self.seconds_per_request = INGEST_TIMEOUT_SECONDS
        self._ids = itertools.count(1)

    def context(self) -> LambdaContext:
        return LambdaContext(
            function_name="IngestFunction",
            invoked_function_arn="arn:aws:lambda:ap-south-1:123456789012:function:IngestFunction",
            memory_limit_in_mb=512,
            log_group_name="/aws/lambda/IngestFunction",
            log_stream_name="local",
            deadline_monotonic=time.monotonic() + self.seconds_per_request,
        )

    def post(
        self,
        body: str | bytes,
        *,
        signed: bool = True,
        secret: str | None = None,
        at: float | None = None,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        text = body if isinstance(body, str) else body.decode("latin-1")
        event = http_event(
            "POST",
            "/v1/invoices",
            body=text,
            msg_id=f"msg_fuzz_{next(self._ids)}",
            secret=secret or self.secret,
            at=time.time() if at is None else at,
            content_type=content_type,
        )
        if isinstance(body, bytes):
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        if not signed:
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
                event["headers"].pop(name, None)
        event["headers"].update(headers or {})
        return self.resolve(event)

    def get(
        self,
        segment: str,
        query: str = "",
        *,
        signed: bool = True,
        signed_content: str | None = None,
        at: float | None = None,
    ) -> Answer:
        """GET /v1/invoices/<segment>?<query>, the segment and query exactly as sent, signed over
        its request line, or over `signed_content` when given (an old or a captured signature)."""
        event = http_event(
            "GET",
            "/v1/invoices/{orderId}",
            path_parameters={"orderId": segment},
            msg_id=f"msg_fuzz_{next(self._ids)}",
            secret=self.secret,
        )
        event["rawQueryString"] = query
        if query:
            event["queryStringParameters"] = dict(
                part.partition("=")[::2] for part in query.split("&") if part
            )
        path = event["rawPath"]
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            event["headers"].pop(name, None)
        at = time.time() if at is None else at
        if signed and signed_content is not None:
            event["headers"].update(signed_headers(self.secret, signed_content, at=at))
        elif signed:
            event["headers"].update(status_headers(self.secret, path, query, at=at))
        return self.resolve(event)

    def resolve(self, event: dict[str, Any]) -> Answer:
        answer = app.resolve(event, self.context())
        raw = answer.get("body") or ""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        return Answer(int(answer["statusCode"]), dict(answer.get("headers") or {}), body)


@contextlib.contextmanager
def ingest_in_process(
    ledger: Any | None = None,
    queue: Any | None = None,
    *,
    secret: str | None = None,
    max_body_bytes: int = 262_144,
    clock: Callable[[], float] | None = None,
    faults: Faults | None = None,
) -> Iterator[Ingest]:
    """Put the port fakes (`tests/fakes.py`) where `relay.wiring` would build AWS clients, for
    the duration of the block. `faults` is the one the default ledger and queue hit."""
    clock = clock or FakeClock()
    faults = faults or Faults()
    ingest = Ingest(
        ledger if ledger is not None else InMemoryLedger(clock, faults),
        queue if queue is not None else RecordingQueue(clock, faults),
        secret or new_secret(),
        faults,
    )
    acceptance = InvoiceAcceptance(ledger=ingest.ledger, queue=ingest.queue, clock=clock, **_budget())
    settings = IngestSettings.model_validate(
        {
            "LEDGER_TABLE_NAME": "InvoiceLedger",
            "INVOICE_QUEUE_URL": "http://127.0.0.1/queue",
            "WEBHOOK_SECRET_ARN": "WebhookSigningSecret",
            "MAX_BODY_BYTES": max_body_bytes,
        }
    )
    replaced: dict[str, Any] = {
        "ingest_settings": lambda: settings,
        "webhook_verifier": lambda: WebhookVerifier([ingest.secret]),
        "request_verifier": lambda: RequestVerifier(SigningSecrets.from_entries({"current": ingest.secret})),
        "acceptance": lambda: acceptance,
        "ingest_ledger": lambda: ingest.ledger,
        "ledger": lambda: ingest.ledger,
    }
    saved = {name: getattr(wiring, name) for name in replaced if hasattr(wiring, name)}
    for name, value in replaced.items():
        setattr(wiring, name, value)
    try:
        yield ingest
    finally:
        for name in replaced:
            if name in saved:
                setattr(wiring, name, saved[name])
            else:
                delattr(wiring, name)


def _budget() -> dict[str, float]:
    """Ingest's time reserve as wiring configures it (absent before breach 11 was closed)."""
    reserve = getattr(wiring, "INGEST_WRITE_RESERVE_SECONDS", None)
    return {} if reserve is None else {"reserve_seconds": reserve}
