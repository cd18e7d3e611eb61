"""The SQS adapter never reports success for a message SQS did not take."""

from typing import Any

import pytest

from factories import invoice
from relay.adapters.queue import SqsInvoiceQueue
from relay.domain.errors import QueueUnavailableError
from relay.domain.messages import QueuedInvoice


class FlakySqs:
    """SendMessageBatch that fails the entries listed per call, in order."""

    def __init__(self, *failing: set[str]) -> None:
        self.failing = list(failing)
        self.sent: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent.append([QueuedInvoice.from_body(e["MessageBody"]).invoice.orderId for e in Entries])
        failing = self.failing.pop(0) if self.failing else set()
        return {
            "Successful": [{"Id": e["Id"]} for e in Entries if e["Id"] not in failing],
            "Failed": [
                {"Id": e["Id"], "Code": "InternalError", "SenderFault": False}
                for e in Entries
                if e["Id"] in failing
            ],
        }


def messages(count: int) -> list[QueuedInvoice]:
    return [
        QueuedInvoice(
            invoice=invoice(f"O-{n}"), content_hash=f"h{n}", accepted_at=0.0, correlation_id="msg_1"
        )
        for n in range(count)
    ]


def test_failed_entries_are_sent_again_until_taken() -> None:
    sqs = FlakySqs({"1", "3"}, {"1"})
    SqsInvoiceQueue("url", sqs, pause=0).send(messages(4))  # type: ignore[arg-type]
    assert sqs.sent == [["O-0", "O-1", "O-2", "O-3"], ["O-1", "O-3"], ["O-1"]]


def test_messages_go_in_batches_of_ten() -> None:
    sqs = FlakySqs()
    SqsInvoiceQueue("url", sqs, pause=0).send(messages(25))  # type: ignore[arg-type]
    # (the batches go at once, so in no particular order)
    assert sorted(len(batch) for batch in sqs.sent) == [5, 10, 10]
    assert sorted(order for batch in sqs.sent for order in batch) == sorted(f"O-{n}" for n in range(25))


def test_entries_sqs_keeps_refusing_raise_naming_them_instead_of_being_reported_queued() -> None:
    # Given SQS refusing the first entry of every batch, and 12 messages (two batches)
    sqs = FlakySqs(*[{"0"}] * 10)
    sent = messages(12)
    # When they are sent
    with pytest.raises(QueueUnavailableError, match="2 invoice") as refused:
        SqsInvoiceQueue("url", sqs, pause=0).send(sent)  # type: ignore[arg-type]
    # Then the error names the two invoices SQS never took, for ingest to mark
    assert sorted(refused.value.unsent) == sorted([sent[0].invoice.key, sent[10].invoice.key])


class RefusingSqs:
    def send_message(self, **_: Any) -> None:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "SendMessage")


def test_a_delayed_send_sqs_refuses_is_the_ports_queue_unavailable_error() -> None:
    # Given SQS refusing SendMessage
    # When the dispatcher queues a message again for later
    # Then it sees the port's own error type, never a botocore one
    with pytest.raises(QueueUnavailableError, match="could not be queued again"):
        SqsInvoiceQueue("url", RefusingSqs()).send_later(messages(1)[0], 30)  # type: ignore[arg-type]
