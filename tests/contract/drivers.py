"""The two implementations of each port under contract (tests/contract/conftest.py), each
with a driver for what the port does not cover but the tests must do: the event source's
receive and delete for the queue, and the faults AWS can produce that moto cannot (a partial
SendMessageBatch, a transaction cancelled with mixed reasons)."""

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from fakes import FakeClock, InMemoryLedger, RecordingQueue
from relay.adapters.ledger import InvoiceLedger
from relay.adapters.queue import SqsInvoiceQueue
from relay.domain.messages import QueuedInvoice, ReceivedMessage
from relay.domain.ports import InvoiceQueue, Ledger
from relay_local.stack import load_template, local_indexes, table_properties

TABLE = "InvoiceLedgerTable"
QUEUE = "InvoiceQueue"
DEAD_LETTER_QUEUE = "InvoiceDeadLetterQueue"


# ---- the ledger ----


@dataclass
class LedgerUnderTest:
    name: str
    ledger: Ledger
    cancel_next: Callable[..., None]
    """The next accept transaction is cancelled with these CancellationReasons codes."""


def create_table(client: Any, parameters: dict[str, str] | None = None) -> None:
    """The ledger table as template.yaml deploys it under these parameters (its indexes chosen)."""
    props = table_properties(TABLE, parameters)
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        GlobalSecondaryIndexes=local_indexes(props),
        BillingMode=props["BillingMode"],
    )


def cancel_transactions(client: Any) -> Callable[..., None]:
    """DynamoDB's TransactionCanceledException for the next TransactWriteItems, with the
    reasons given, answered before the request reaches moto (which then writes nothing): moto
    cancels only for its own conditions, never with a throttle beside one."""
    pending: list[Sequence[str]] = []

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if not pending:
            return None
        reasons = pending.pop(0)
        parsed = {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": code} for code in reasons],
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        return AWSResponse("http://127.0.0.1", 400, {}, RawBody(b"")), parsed

    client.meta.events.register_first("before-call.dynamodb.TransactWriteItems", answer)
    return lambda *reasons: pending.append(reasons)


@dataclass
class QueueUnderTest:
    name: str
    queue: InvoiceQueue
    receive: Callable[[int], list[ReceivedMessage]]
    """What Lambda's event source takes: up to n visible messages, each delivery counted."""
    delete: Callable[[ReceivedMessage], None]
    """Lambda's delete of a message its function did not name in batchItemFailures."""
    refuse_next: Callable[[Callable[[int, QueuedInvoice], bool]], None]
    """The next send's SendMessageBatch fails the entries the predicate names (every attempt)."""


class PartlyRefusingSqs:
    """The SQS client, but SendMessageBatch fails the entries a predicate names and sends the
    rest: a partial failure, which moto never produces on its own."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.refusals: list[Callable[[int, QueuedInvoice], bool]] = []
        self._index: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        refuses = self.refusals[0] if self.refusals else None
        if refuses is None:
            return dict(self._client.send_message_batch(QueueUrl=QueueUrl, Entries=Entries))
        refused = [
            entry
            for entry in Entries
            if refuses(int(entry["Id"]), QueuedInvoice.from_body(entry["MessageBody"]))
        ]
        taken = [entry for entry in Entries if entry not in refused]
        answer: dict[str, Any] = {"Successful": [], "Failed": []}
        if taken:
            answer = dict(self._client.send_message_batch(QueueUrl=QueueUrl, Entries=taken))
        answer.setdefault("Failed", [])
        answer["Failed"] = [
            *answer["Failed"],
            *({"Id": entry["Id"], "Code": "InternalError", "SenderFault": False} for entry in refused),
        ]
        return answer

    def sent(self) -> None:
        """One send is over: its refusals end."""
        if self.refusals:
            self.refusals.pop(0)


def create_queues(client: Any) -> str:
    """The template's queue and dead-letter queue, with its own attributes and redrive policy."""
    template = load_template()
    resources = template["Resources"]
    dead = client.create_queue(
        QueueName=DEAD_LETTER_QUEUE,
        Attributes={
            "MessageRetentionPeriod": str(
                resources[DEAD_LETTER_QUEUE]["Properties"]["MessageRetentionPeriod"]
            )
        },
    )["QueueUrl"]
    dead_arn = client.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    props = resources[QUEUE]["Properties"]
    max_receives = template["Parameters"]["MaxReceiveCount"]["Default"]
    url: str = client.create_queue(
        QueueName=QUEUE,
        Attributes={
            "VisibilityTimeout": str(props["VisibilityTimeout"]),
            "MessageRetentionPeriod": str(props["MessageRetentionPeriod"]),
            "MaximumMessageSize": str(props["MaximumMessageSize"]),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": max_receives}),
        },
    )["QueueUrl"]
    return url


class RawBody:
    """The raw body botocore reads from an AWSResponse."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self._data

    def read(self, *_: object) -> bytes:
        return self._data


def fake_ledger() -> LedgerUnderTest:
    fake = InMemoryLedger(FakeClock())
    return LedgerUnderTest("fake", fake, fake.cancel_next)


def dynamodb_ledger() -> LedgerUnderTest:
    """The adapter over a table built from the template (inside mock_aws)."""
    client = boto3.client("dynamodb", region_name="ap-south-1")
    create_table(client)
    return LedgerUnderTest("dynamodb", InvoiceLedger(TABLE, client), cancel_transactions(client))


def fake_queue() -> QueueUnderTest:
    fake = RecordingQueue(FakeClock())

    def delete(delivery: ReceivedMessage) -> None:
        fake.answer([delivery], [])

    return QueueUnderTest("fake", fake, fake.receive, delete, fake.refuse_next)


class _EndingRefusals:
    """The adapter, each send ending the refusals planned for it."""

    def __init__(self, adapter: SqsInvoiceQueue, sqs: PartlyRefusingSqs) -> None:
        self._adapter = adapter
        self._sqs = sqs

    def send(self, messages: Sequence[QueuedInvoice]) -> None:
        try:
            self._adapter.send(messages)
        finally:
            self._sqs.sent()

    def send_later(self, message: QueuedInvoice, delay_seconds: int) -> None:
        self._adapter.send_later(message, delay_seconds)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._adapter.change_visibility(receipt_handle, seconds)


def sqs_queue() -> QueueUnderTest:
    """The adapter over the template's queues (inside mock_aws)."""
    client = boto3.client("sqs", region_name="ap-south-1")
    url = create_queues(client)
    sqs = PartlyRefusingSqs(client)

    def receive(limit: int) -> list[ReceivedMessage]:
        answer = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=limit, MessageSystemAttributeNames=["ApproximateReceiveCount"]
        )
        return [
            ReceivedMessage(
                item["MessageId"],
                item["ReceiptHandle"],
                int(item["Attributes"]["ApproximateReceiveCount"]),
                QueuedInvoice.from_body(item["Body"]),
            )
            for item in answer.get("Messages", [])
        ]

    def delete(delivery: ReceivedMessage) -> None:
        client.delete_message(QueueUrl=url, ReceiptHandle=delivery.receipt_handle)

    adapter = SqsInvoiceQueue(url, sqs, pause=0)  # type: ignore[arg-type]
    return QueueUnderTest("sqs", _EndingRefusals(adapter, sqs), receive, delete, sqs.refusals.append)
