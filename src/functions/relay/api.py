"""The webhook API: routes, and every refusal mapped to one RFC 9457 problem answer, here only.

Order of checks on POST: size (413) and content type (415) first because they are cheap,
then the signature (401) before the body is parsed, so an unsigned sender learns nothing
about our schema; then JSON (400), schema (422) and the ledger (409). Our own trouble
(a secret, the ledger or the queue unavailable, or too little time left) is a 503 with
Retry-After; nothing a client sends is ever answered 5xx otherwise.

The status GET is signed over its request line, `GET <path>?<query>` as sent
(`relay.domain.standard_webhooks.request_line`), and its `orderId` path segment is percent-decoded
once, then held to the same rule as a POSTed `orderId` (`docs/interface.md`).
"""

import base64
import binascii
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from botocore.exceptions import BotoCoreError, ClientError

from relay import wiring
from relay.domain.errors import (
    AcceptanceOutOfTime,
    AcceptRaceError,
    ConflictError,
    FieldError,
    InvalidInvoices,
    LedgerUnavailableError,
    MalformedBody,
    PayloadTooLarge,
    QueueUnavailableError,
    SecretFormatError,
    SecretUnavailableError,
    SignatureRefused,
    SigningSecretMissing,
    UnqueueableInvoices,
    UnsupportedMediaType,
)
from relay.domain.invoice import KEY_PATTERN, InvoiceKey, InvoiceType, is_key_part
from relay.domain.standard_webhooks import request_line
from relay.domain.status import status_document
from relay.domain.webhook import check_envelope, header, parse_invoices
from relay.observability import count, logger, tracer

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = "30"

app = APIGatewayHttpResolver()


@app.post("/v1/invoices")
def receive_invoices() -> Response[str]:
    event = app.current_event
    raw = _raw_body(event.body, bool(event.is_base64_encoded))
    verifier = wiring.request_verifier()  # Standard Webhooks, or a preset (relay.domain.signatures)
    check_envelope(verifier.content_type(event.headers), len(raw), wiring.ingest_settings().max_body_bytes)
    try:
        body = raw.decode()
    except UnicodeDecodeError:
        raise MalformedBody("body is not UTF-8 text") from None
    tracer.put_annotation("signature_scheme", verifier.verify(raw, event.headers))
    webhook_id = header(event.headers, "webhook-id")
    # Finds this request's trace in X-Ray by the id the ERP, the logs and the ledger know.
    tracer.put_annotation("webhook_id", webhook_id or "")
    invoices = parse_invoices(body)
    admissions = wiring.acceptance().accept(invoices, correlation_id=webhook_id, seconds_left=_seconds_left())
    answer = {
        "invoices": [
            {
                "orderId": admission.invoice.orderId,
                "invoiceType": admission.invoice.invoiceType,
                "invoiceNumber": admission.invoice.invoiceNumber,
                "status": admission.status,
            }
            for admission in admissions
        ]
    }
    return Response(HTTPStatus.ACCEPTED, "application/json", json.dumps(answer))


@app.get("/v1/invoices/<order_id>")
def invoice_status(order_id: str) -> Response[str]:
    event = app.current_event
    signed = request_line(event.request_context.http.method, event.raw_path, event.raw_query_string or "")
    wiring.webhook_verifier().verify(signed, event.headers)
    requested = event.get_query_string_value("invoiceType", InvoiceType.SALE.value) or ""
    if requested not in InvoiceType:
        raise MalformedBody(f"invoiceType must be 'sale' or 'return', not {requested!r}")
    order_id = unquote(order_id, errors="replace")
    if not is_key_part(order_id):
        raise InvalidInvoices(
            [FieldError(None, "orderId", f"an orderId matches {KEY_PATTERN}")],
            detail="the order id in the path breaks the orderId rule; no invoice was looked up",
        )
    entry = wiring.ingest_ledger().get(InvoiceKey(order_id, InvoiceType(requested)))
    if entry is None:
        return _problem(
            HTTPStatus.NOT_FOUND,
            "Invoice not found",
            f"no invoice {requested} for order {order_id}",
        )
    return Response(HTTPStatus.OK, "application/json", json.dumps(status_document(entry)))


def _seconds_left() -> Callable[[], float]:
    """What the invocation has left before its timeout, less the answer's margin (`relay.wiring`)."""
    context = app.lambda_context
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return lambda: float("inf")
    return lambda: context.get_remaining_time_in_millis() / 1000 - wiring.INGEST_ANSWER_MARGIN_SECONDS


def _raw_body(body: str | None, is_base64: bool) -> bytes:
    if not body:
        return b""
    if not is_base64:
        return body.encode()
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise MalformedBody("body is not valid base64") from None


def _problem(status: HTTPStatus, title: str, detail: str, **extra: Any) -> Response[str]:
    body = {"type": "about:blank", "title": title, "status": int(status), "detail": detail, **extra}
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == HTTPStatus.SERVICE_UNAVAILABLE else None
    return Response(status, PROBLEM_JSON, json.dumps(body), headers=headers)


def _refused(reason: str, status: HTTPStatus, title: str, detail: str, **extra: Any) -> Response[str]:
    count("IngestRefused", reason=reason)
    logger.info("webhook refused", extra={"reason": reason, "status": int(status)})
    return _problem(status, title, detail, **extra)


@app.exception_handler(SignatureRefused)
def _signature(error: SignatureRefused) -> Response[str]:
    return _refused("signature", HTTPStatus.UNAUTHORIZED, "Signature refused", str(error))


@app.exception_handler(PayloadTooLarge)
def _too_large(error: PayloadTooLarge) -> Response[str]:
    return _refused("too_large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Body too large", str(error))


@app.exception_handler(UnsupportedMediaType)
def _media_type(error: UnsupportedMediaType) -> Response[str]:
    return _refused("media_type", HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Unsupported content type", str(error))


@app.exception_handler(MalformedBody)
def _malformed(error: MalformedBody) -> Response[str]:
    return _refused("malformed", HTTPStatus.BAD_REQUEST, "Malformed request", str(error))


@app.exception_handler(InvalidInvoices)
def _invalid(error: InvalidInvoices) -> Response[str]:
    errors = [item.as_dict() for item in error.errors]
    return _refused("invalid", HTTPStatus.UNPROCESSABLE_ENTITY, "Invalid invoices", str(error), errors=errors)


@app.exception_handler(ConflictError)
def _conflict(error: ConflictError) -> Response[str]:
    conflicts = [
        {
            "index": item.index,
            "orderId": item.key.order_id,
            "invoiceType": item.key.invoice_type,
            "status": item.status,
            "recordedInvoiceNumber": item.invoice_number,
        }
        for item in error.conflicts
    ]
    detail = "a different invoice is already recorded for these keys; nothing was queued"
    return _refused("conflict", HTTPStatus.CONFLICT, "Invoice conflict", detail, conflicts=conflicts)


@app.exception_handler(UnqueueableInvoices)
def _unqueueable(error: UnqueueableInvoices) -> Response[str]:
    errors = [
        {
            "index": None,
            "field": "",
            "orderId": key.order_id,
            "invoiceType": key.invoice_type,
            "message": "too large for one queue message, or not carried unchanged; nothing was queued",
        }
        for key in error.keys
    ]
    return _refused("invalid", HTTPStatus.UNPROCESSABLE_ENTITY, "Invalid invoices", str(error), errors=errors)


@app.exception_handler(AcceptRaceError)
@app.exception_handler(AcceptanceOutOfTime)
@app.exception_handler(QueueUnavailableError)
@app.exception_handler(LedgerUnavailableError)
@app.exception_handler(SecretUnavailableError)
@app.exception_handler(SigningSecretMissing)
@app.exception_handler(SecretFormatError)
@app.exception_handler(BotoCoreError)
@app.exception_handler(ClientError)
def _unavailable(error: Exception) -> Response[str]:
    # Our side, not the sender's: say so without details, and ask for a retry.
    logger.exception("ingest could not complete", extra={"error": type(error).__name__})
    count("IngestErrors", kind=type(error).__name__)
    detail = "the relay cannot accept invoices right now; retry later (a retry never sends an invoice twice)"
    return _problem(HTTPStatus.SERVICE_UNAVAILABLE, "Temporarily unavailable", detail)
