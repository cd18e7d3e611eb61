"""events/: sample events for `sam local invoke -e`, `make invoke`, `make send` and the tests.

Built here, not by hand, so they can be regenerated (`python -m relay_local events`) and a
test can check the folder still matches (`--check`). Everything is fixed: order ids,
webhook ids, and the signing time, SIGNED_AT. That time is long past, so a receiver
following Standard Webhooks refuses these signatures as stale; `make invoke` re-signs a
stale event with the current time (and says so), which is what a sender would do.

HTTP events are what API Gateway (HTTP API, payload format 2.0) hands the ingest function
in AWS, so they carry the deployed API's shape (https, an execute-api domain), not the
local API's. Their signatures verify with relay_local.signing.LOCAL_WEBHOOK_SECRET.
Every event is made by the builders the local run uses (relay_local.lambda_events).
"""

import hashlib
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.domain.invoice import Invoice
from relay.domain.messages import QueuedInvoice
from relay.domain.standard_webhooks import request_line
from relay_local.identity import ACCOUNT_ID, REGION
from relay_local.lambda_events import HttpRequest, http_api_event, scheduled_event, sqs_record
from relay_local.signing import LOCAL_WEBHOOK_SECRET, signed_headers
from relay_local.stack import LocalStack, load_template

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

EVENTS_DIR = Path(__file__).resolve().parents[3] / "events"
SIGNED_AT = 1_735_689_600  # 2025-01-01T00:00:00Z
API_ID = "a1b2c3d4e5"
LOCAL_ENDPOINT = "http://127.0.0.1:5000"
"""Where env.json expects the stack's resources: moto_server's default port."""
LOCAL_FYND_URL = "http://127.0.0.1:8900"
"""Where env.json expects Fynd: `python -m fynd_simulator`'s default port."""
_IDS = uuid.UUID("6f1d0c4e-6b1a-4c55-9d7e-1ca1c0de0000")  # namespace for the fixed message ids


def _invoice(order_id: str, number: str, invoice_type: str = "sale", **fields: Any) -> dict[str, Any]:
    return {
        "orderId": order_id,
        "invoiceNumber": number,
        "invoiceType": invoice_type,
        **fields,
        "orderItems": [{"orderItemId": f"{order_id}-1", "quantity": 1}],
    }


INVOICE = _invoice(
    "FY-10001",
    "INV-2025-10001",
    irnNumber="a5c12dca80e743321740b001fd70953e8738d109865d28ba4013750f2046f229",
    ackNumber="112510000000001",
    ackDate="2025-01-01 10:00:00",
)
CREDIT_NOTE = _invoice("FY-10002", "CN-2025-10002", "return")
MIXED = [
    _invoice("FY-30001", "INV-2025-30001"),
    _invoice("FY-30002", "INV-2025-30002"),
    _invoice("FY-30001", "INV-2025-30001"),  # an ERP's blind resend: collapses into one
    _invoice("CANCELLED-30003", "INV-2025-30003"),  # Fynd: IN401, rejected
    _invoice("UNKNOWN-30004", "INV-2025-30004"),  # Fynd: IN400, rejected
    _invoice("EARLY-30005", "INV-2025-30005"),  # Fynd: IN403 twice, then invoiced
]
INVALID = {
    "orderId": "FY-40001",
    "invoiceType": "sale",
    "orderItems": [{"orderItemId": "FY-40001-1", "quantity": 0}],
}
"""No invoiceNumber, and a quantity of 0: 422, nothing queued."""
QUEUED = [
    _invoice("FY-20001", "INV-2025-20001"),
    _invoice("FY-20002", "INV-2025-20002"),
    _invoice("CANCELLED-20003", "INV-2025-20003"),
]


def http_event(
    method: str,
    route_path: str,
    *,
    body: str = "",
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    msg_id: str,
    secret: str = LOCAL_WEBHOOK_SECRET,
    at: float = SIGNED_AT,
    content_type: str | None = "application/json",
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, signed with `secret` (LOCAL_WEBHOOK_SECRET)
    at `at` (SIGNED_AT): a POST over its body, any other method over its request line
    `METHOD <path>?<query>`. Path parameter and query values go into the path as given."""
    raw_path = route_path
    for name, value in (path_parameters or {}).items():
        raw_path = raw_path.replace(f"{{{name}}}", value)
    raw_query = "&".join(f"{name}={value}" for name, value in (query or {}).items())
    domain = f"{API_ID}.execute-api.{REGION}.amazonaws.com"
    # A POST signs its body; a bodiless request signs its request line as sent.
    signed = body if method == "POST" else request_line(method, raw_path, raw_query)
    headers = {
        "accept": "application/json",
        "host": domain,
        "user-agent": "erp-sample/1.0",
        **signed_headers(secret, signed, msg_id=msg_id, at=at),
        "x-forwarded-for": "203.0.113.10",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if body:
        headers |= {"content-length": str(len(body.encode()))}
        if content_type:
            headers["content-type"] = content_type
    target = f"{raw_path}?{raw_query}" if raw_query else raw_path
    request = HttpRequest(method, target, sorted(headers.items()), body.encode(), "203.0.113.10")
    request_id = f"{msg_id.removeprefix('msg_')}="
    return http_api_event(
        request,
        f"{method} {route_path}",
        path_parameters or {},
        api_id=API_ID,
        domain=domain,
        request_id=request_id,
        at=at,
    )


def sqs_event(invoices: list[dict[str, Any]], *, correlation_id: str) -> dict[str, Any]:
    """The dispatcher's event: one record per QueuedInvoice, as ingest queues them."""
    records = []
    for position, document in enumerate(invoices, start=1):
        invoice = Invoice.model_validate(document)
        body = QueuedInvoice(
            invoice=invoice,
            content_hash=invoice.content_hash(),
            accepted_at=SIGNED_AT,
            correlation_id=correlation_id,
        ).to_body()
        message: MessageTypeDef = {
            "MessageId": str(uuid.uuid5(_IDS, invoice.orderId)),
            "ReceiptHandle": f"AQEBlocal-receipt-handle-{position}",
            "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's checksum
            "Body": body,
            "Attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": str(SIGNED_AT * 1000),
                "SenderId": "AROAEXAMPLE:IngestFunction",
                "ApproximateFirstReceiveTimestamp": str(SIGNED_AT * 1000 + 50),
            },
            "MessageAttributes": {"correlationId": {"StringValue": correlation_id, "DataType": "String"}},
        }
        records.append(sqs_record(message, f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:InvoiceQueue", REGION))
    return {"Records": records}


def _scheduled(rule: str) -> dict[str, Any]:
    return scheduled_event(f"relay-{rule}", event_id=str(uuid.uuid5(_IDS, rule)), at=SIGNED_AT)


def env_vars() -> dict[str, dict[str, str]]:
    """`sam local invoke --env-vars` file: each function's template variables, resolved for a
    standalone local stack (resources named by logical id on LOCAL_ENDPOINT, Fynd on LOCAL_FYND_URL).
    SAM overrides only variables the template declares, so these are exactly those."""
    template = load_template()
    resources = template["Resources"]
    references = {name: str(spec.get("Default", "")) for name, spec in template["Parameters"].items()}
    references["FyndBaseUrl"] = LOCAL_FYND_URL
    for logical_id, resource in resources.items():
        kind = resource["Type"]
        if kind == "AWS::SQS::Queue":
            fifo = (
                ".fifo" if resource.get("Properties", {}).get("FifoQueue") else ""
            )  # as build_stack names it
            references[logical_id] = f"{LOCAL_ENDPOINT}/{ACCOUNT_ID}/{logical_id}{fifo}"
        elif kind in ("AWS::DynamoDB::Table", "AWS::SecretsManager::Secret"):
            references[logical_id] = logical_id  # a secret's name works wherever its ARN does
    stack = LocalStack(LOCAL_ENDPOINT, REGION, template, references, references, {})
    functions = [name for name, spec in resources.items() if spec["Type"] == "AWS::Serverless::Function"]
    return {name: stack.function_environment(name) for name in functions}


def event_files() -> dict[str, Any]:
    """Every file of events/ except its README, by name."""
    invoice_body = json.dumps(INVOICE)
    return {
        "invoice.json": INVOICE,
        "credit-note.json": CREDIT_NOTE,
        "invoices-mixed.json": MIXED,
        "ingest-post-invoice.json": http_event(
            "POST", "/v1/invoices", body=invoice_body, msg_id="msg_local_post_invoice"
        ),
        "ingest-post-credit-note.json": http_event(
            "POST", "/v1/invoices", body=json.dumps(CREDIT_NOTE), msg_id="msg_local_post_credit_note"
        ),
        "ingest-post-invalid.json": http_event(
            "POST", "/v1/invoices", body=json.dumps(INVALID), msg_id="msg_local_post_invalid"
        ),
        "ingest-get-status.json": http_event(
            "GET",
            "/v1/invoices/{orderId}",
            path_parameters={"orderId": str(INVOICE["orderId"])},
            query={"invoiceType": "sale"},
            msg_id="msg_local_get_status",
        ),
        "dispatch-sqs-batch.json": sqs_event(QUEUED, correlation_id="msg_local_post_batch"),
        "reconcile-scheduled.json": _scheduled("ReconcileFunctionEveryFiveMinutes"),
        "env.json": env_vars(),
    }


def render(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def write_events(directory: Path = EVENTS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in event_files().items():
        path = directory / name
        path.write_text(render(document))
        written.append(path)
    return written


def stale_events(directory: Path = EVENTS_DIR) -> list[str]:
    """Names of the files that are missing or differ from what this module generates."""
    return [
        name
        for name, document in event_files().items()
        if not (directory / name).is_file() or (directory / name).read_text() != render(document)
    ]
