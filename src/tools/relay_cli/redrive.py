"""Dead-letter queue back to the invoice queue, message by message, nothing lost or doubled.

Each message is sent to the invoice queue (body and attributes as they were) before it is
deleted from the dead-letter queue, so a crash in between can only leave a copy on both;
the dispatcher's ledger claim makes such a copy harmless (it is never sent to Fynd twice).
SQS's own StartMessageMoveTask does the same server-side but reports no per-message
progress and is not on every endpoint the relay runs against (moto), so this is portable.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_SQS_BATCH = 10


@dataclass
class RedriveResult:
    waiting: int
    """Messages on the dead-letter queue when the redrive started (SQS's approximate count)."""
    moved: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    """SQS error codes of messages that stay on the dead-letter queue."""


def depth(sqs: "SQSClient", queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0))


def in_flight(sqs: "SQSClient", queue_url: str) -> int:
    """Messages received and not yet deleted or back: what dispatchers hold right now (or
    what waits out a visibility timeout)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))


def redrive(
    sqs: "SQSClient",
    *,
    dead_letter_queue_url: str,
    queue_url: str,
    limit: int | None = None,
    on_progress: Callable[[int], None] = lambda _moved: None,
) -> RedriveResult:
    """Move up to `limit` messages (all, by default); `on_progress` gets the count moved so far."""
    result = RedriveResult(waiting=depth(sqs, dead_letter_queue_url))
    empty_receives = 0
    # SQS's ReceiveMessage may answer empty while messages exist (it samples servers): try twice.
    while empty_receives < 2 and (limit is None or result.moved + result.failed < limit):
        wanted = _SQS_BATCH if limit is None else min(_SQS_BATCH, limit - result.moved - result.failed)
        messages = sqs.receive_message(
            QueueUrl=dead_letter_queue_url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            empty_receives += 1
            continue
        empty_receives = 0
        _move(sqs, messages, queue_url, dead_letter_queue_url, result)
        on_progress(result.moved)
    return result


def _move(
    sqs: "SQSClient",
    messages: list[Any],
    queue_url: str,
    dead_letter_queue_url: str,
    result: RedriveResult,
) -> None:
    entries: list[Any] = [
        {
            "Id": str(index),
            "MessageBody": message["Body"],
            **(
                {"MessageAttributes": message["MessageAttributes"]}
                if message.get("MessageAttributes")
                else {}
            ),
        }
        for index, message in enumerate(messages)
    ]
    sent = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    for failure in sent.get("Failed", []):
        result.failed += 1
        result.failures.append(failure.get("Code", "unknown"))
    delivered = [messages[int(entry["Id"])] for entry in sent.get("Successful", [])]
    if not delivered:
        return
    deleted = sqs.delete_message_batch(
        QueueUrl=dead_letter_queue_url,
        Entries=[
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(delivered)
        ],
    )
    # A message queued but not deleted comes back to the dead-letter queue after its visibility
    # timeout; the copy already queued is the one that counts, and the ledger stops a second send.
    result.moved += len(delivered)
    for failure in deleted.get("Failed", []):
        result.failures.append(f"not deleted from the dead-letter queue: {failure.get('Code', 'unknown')}")
