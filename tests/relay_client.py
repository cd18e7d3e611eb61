"""An ERP's view of a running relay: sign and post invoices, ask for their status, wait for outcomes."""

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import urllib3

from fynd_simulator import FyndSimulator
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.wiring import ledger
from relay_local.lambda_events import sqs_record
from relay_local.pipeline import LocalPipeline
from relay_local.signing import signed_headers, status_headers

FINAL = frozenset({"INVOICED", "REJECTED"})
RESENDS_AFTER_5XX = 5
"""How many times `post` resends a delivery answered 5xx, as a Standard Webhooks sender does
(the same webhook-id, so ingest takes it for the same delivery). On a loaded machine the first
request of a fresh pipeline (boto3 clients, the secret, moto) can use most of ingest's 10 s:
ingest then answers 503 (too little left for the write it reserves time for) or runs past its
timeout (500, as API Gateway answers a timed-out function), and a test that took that answer
for an acceptance failed under load (issue 18, item 7). A resend finds the clients built and
the secret cached; what the test waits for is the answer, not a clock."""
FAST_RETRIES = {
    "RETRY_BASE_SECONDS": "1",
    "RETRY_MAX_SECONDS": "2",
    # A lease that ends soon, with Fynd timeouts and a record reserve that still fit inside it.
    "LEASE_SECONDS": "8",
    "FYND_CONNECT_TIMEOUT_SECONDS": "1",
    "FYND_READ_TIMEOUT_SECONDS": "3",
    "RECORD_RESERVE_SECONDS": "1",
    # moto on a loaded machine answers far slower than DynamoDB: ingest's calls may take longer
    # here than its budget allows one in AWS (the budget it keeps is unchanged).
    "INGEST_AWS_READ_TIMEOUT_SECONDS": "3",
}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class RelayClient:
    """What an ERP does: sign and post invoices, ask for their status."""

    def __init__(self, pipeline: LocalPipeline, secret: str) -> None:
        self.pipeline = pipeline
        self.secret = secret
        self.http = urllib3.PoolManager()

    @property
    def simulator(self) -> FyndSimulator:
        assert self.pipeline.simulator is not None
        return self.pipeline.simulator

    def post(
        self,
        payload: Any = None,
        *,
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        secret: str | None = None,
        resend_5xx: bool = True,
    ) -> Answer:
        """Sign and post; a 5xx is resent as the same delivery (RESENDS_AFTER_5XX), as an ERP would,
        unless `resend_5xx` is False (a test of the 5xx itself)."""
        text = body if body is not None else json.dumps(payload)
        signed = signed_headers(
            secret or self.secret, text if isinstance(text, str) else text.decode("latin-1")
        )
        all_headers = {"Content-Type": content_type, **signed, **(headers or {})}
        for _ in range(1 + (RESENDS_AFTER_5XX if resend_5xx else 0)):
            response = self.http.request(
                "POST", f"{self.pipeline.api_url}/v1/invoices", body=text, headers=all_headers
            )
            if response.status < 500:
                break
        return _answer(response)

    def post_unsigned(self, body: str, headers: dict[str, str]) -> Answer:
        """POST exactly these headers (plus the JSON content type): for tampered or missing signatures."""
        all_headers = {"Content-Type": "application/json", **headers}
        response = self.http.request(
            "POST", f"{self.pipeline.api_url}/v1/invoices", body=body, headers=all_headers
        )
        return _answer(response)

    def post_raw(self, body: bytes, headers: dict[str, str]) -> Answer:
        """POST exactly these bytes and headers, adding nothing (no content type): a foreign sender."""
        response = self.http.request(
            "POST", f"{self.pipeline.api_url}/v1/invoices", body=body, headers=headers
        )
        return _answer(response)

    def status(self, order_id: str, invoice_type: str | None = None, *, signed: bool = True) -> Answer:
        path = f"/v1/invoices/{order_id}"
        query = f"invoiceType={invoice_type}" if invoice_type else ""
        headers = status_headers(self.secret, path, query) if signed else {}
        url = f"{self.pipeline.api_url}{path}" + (f"?{query}" if query else "")
        response = self.http.request("GET", url, headers=headers)
        return _answer(response)

    def settle(self, *order_ids: str, invoice_type: str = "sale") -> dict[str, Any]:
        """Each order's final status document, by order id."""
        final = self.wait_for_final(*((order_id, invoice_type) for order_id in order_ids))
        return {order_id: body for (order_id, _), body in final.items()}

    def receive(self, count: int) -> list[dict[str, Any]]:
        """Take `count` messages off the invoice queue as the records of a Lambda SQS event."""
        stack = self.pipeline.stack
        assert stack is not None
        sqs = self.pipeline.sqs()
        arn = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(records) < count and time.monotonic() < deadline:
            messages = sqs.receive_message(
                QueueUrl=stack.queue_url,
                MaxNumberOfMessages=min(10, count - len(records)),
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            records.extend(sqs_record(message, arn, stack.region) for message in messages)
        assert len(records) == count, f"expected {count} messages on the queue, got {len(records)}"
        return records

    def queue_again(self, order_id: str, invoice_type: str = "sale") -> None:
        """Another message for an accepted invoice, from the copy ingest stored beside its entry:
        what the reconciler, an ERP's retry after a failed send or an operator's redrive queues."""
        stack = self.pipeline.stack
        assert stack is not None
        message = ledger().body(InvoiceKey(order_id, InvoiceType(invoice_type)))
        assert message is not None, f"no stored invoice for {order_id}#{invoice_type}"
        self.pipeline.sqs().send_message(QueueUrl=stack.queue_url, MessageBody=message.to_body())

    def dispatch(self, *records: dict[str, Any], receive_count: int | None = None) -> list[str]:
        """Hand the dispatcher one batch, as the event source would; the message ids it fails."""
        if receive_count is not None:
            for record in records:
                record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        assert self.pipeline.dispatch is not None
        answer = self.pipeline.dispatch.invoke({"Records": list(records)})
        return [item["itemIdentifier"] for item in answer["batchItemFailures"]]

    def wait_until_due(self, order_id: str, invoice_type: str = "sale") -> None:
        """Sleep until a RETRYING invoice's next attempt is due, as its message would wait."""
        due = self.status(order_id, invoice_type).body.get("nextAttemptAt")
        if due:
            time.sleep(max(0.0, datetime.fromisoformat(due).timestamp() - time.time()) + 0.05)

    def wait_for_final(self, *keys: tuple[str, str], timeout: float = 30) -> dict[tuple[str, str], Any]:
        """Poll the status API until every key is INVOICED or REJECTED."""
        deadline = time.monotonic() + timeout
        found: dict[tuple[str, str], Any] = {}
        while time.monotonic() < deadline:
            for order_id, invoice_type in keys:
                if (order_id, invoice_type) not in found:
                    answer = self.status(order_id, invoice_type)
                    if answer.status == 200 and answer.body["status"] in FINAL:
                        found[(order_id, invoice_type)] = answer.body
            if len(found) == len(keys):
                return found
            time.sleep(0.2)
        missing = [key for key in keys if key not in found]
        raise AssertionError(f"not final within {timeout} s: {missing}")


def _answer(response: urllib3.BaseHTTPResponse) -> Answer:
    try:
        body = json.loads(response.data) if response.data else None
    except ValueError:
        body = response.data.decode(errors="replace")
    return Answer(response.status, dict(response.headers), body)
