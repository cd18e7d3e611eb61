"""The SQS guard in front of the local moto server (relay_local/sqs_guard.py): messages sent
while others are deleted are all kept, as SQS keeps every message it accepted; and a message
holding a character SQS does not carry is refused, as SQS refuses it."""

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from factories import invoice
from relay.adapters.queue import SqsInvoiceQueue
from relay.domain.errors import QueueUnavailableError
from relay.domain.messages import QueuedInvoice
from relay_local.sqs_guard import guard_sqs
from relay_local.stack import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

IN_FLIGHT = 800
"""Messages received and not yet deleted: moto's delete walks them all, which is the race's window."""
SENDERS = DELETERS = 3
SENDS_PER_SENDER = 10


@pytest.fixture
def sqs() -> Iterator[tuple["SQSClient", str]]:
    with MotoServer() as moto:
        guard_sqs(moto)
        moto.reset()
        client: SQSClient = moto.client("sqs", Config(max_pool_connections=SENDERS + DELETERS))
        queue_url = client.create_queue(QueueName="Guarded", Attributes={"VisibilityTimeout": "600"})[
            "QueueUrl"
        ]
        yield client, queue_url


@pytest.fixture
def threads_switch_often() -> Iterator[None]:
    """moto runs in this process: switching its threads often makes any race in it show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(interval)


def send(sqs: "SQSClient", queue_url: str, bodies: list[str]) -> list[str]:
    answer = sqs.send_message_batch(
        QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
    )
    assert not answer.get("Failed")
    return [entry["MessageId"] for entry in answer["Successful"]]


def receive_all(sqs: "SQSClient", queue_url: str) -> dict[str, str]:
    """Every visible message, made in flight: message id -> receipt handle."""
    received: dict[str, str] = {}
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        received |= {message["MessageId"]: message["ReceiptHandle"] for message in messages}
    return received


@pytest.mark.usefixtures("threads_switch_often")
def test_messages_sent_while_others_are_deleted_are_all_kept(sqs: tuple["SQSClient", str]) -> None:
    client, queue_url = sqs
    # Given many messages in flight (received by a consumer, not yet deleted)
    for start in range(0, IN_FLIGHT, 10):
        send(client, queue_url, [f"old-{n}" for n in range(start, start + 10)])
    in_flight = receive_all(client, queue_url)
    assert len(in_flight) == IN_FLIGHT
    handles = list(in_flight.values())
    chunks = [handles[start : start + 10] for start in range(0, IN_FLIGHT, 10)]

    # When consumers delete them all while producers send new ones, all at once
    def delete(chunk: list[str]) -> list[str]:
        entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)]
        assert not client.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")  # type: ignore[arg-type]
        return []

    def produce(sender: int) -> list[str]:
        bodies = ([f"new-{sender}-{n}-{i}" for i in range(10)] for n in range(SENDS_PER_SENDER))
        return [message_id for batch in bodies for message_id in send(client, queue_url, batch)]

    jobs: list[Callable[[], list[str]]] = [partial(produce, sender) for sender in range(SENDERS)]
    jobs += [partial(delete, chunk) for chunk in chunks]
    with ThreadPoolExecutor(SENDERS + DELETERS) as pool:
        sent = [message_id for ids in pool.map(lambda job: job(), jobs) for message_id in ids]

    # Then every message sent is on the queue, and no deleted one came back
    assert len(sent) == SENDERS * SENDS_PER_SENDER * 10
    assert sorted(receive_all(client, queue_url)) == sorted(sent)


# ---- issue 18, breach 1: SQS's character rule, which moto does not apply ----


@pytest.mark.parametrize("character", ["\ufffe", "\uffff", "\u0001", "\ud83d"])
def test_the_local_queue_refuses_a_character_sqs_cannot_carry_as_aws_does(
    sqs: tuple["SQSClient", str], character: str
) -> None:
    client, queue_url = sqs
    # When a message body, or a String attribute, holds a character outside SQS's allowed set
    attribute = {"correlationId": {"DataType": "String", "StringValue": f"wh{character}"}}
    refusals = []
    for body, attributes in ((f"a{character}b", {}), ("plain", attribute)):
        with pytest.raises(ClientError) as refused:
            client.send_message(QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes)  # type: ignore[arg-type]
        refusals.append(refused.value.response["Error"]["Code"])
    # Then each send is refused with InvalidMessageContents, as SendMessage in AWS does, and nothing is queued
    assert refusals == ["InvalidMessageContents"] * 2
    assert receive_all(client, queue_url) == {}


def test_a_batch_entry_sqs_cannot_carry_fails_alone(sqs: tuple["SQSClient", str]) -> None:
    client, queue_url = sqs
    # When a batch holds one entry with U+FFFF among good ones
    answer = client.send_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": "good-1", "MessageBody": "one"},
            {"Id": "bad", "MessageBody": "two\uffff"},
            {"Id": "good-2", "MessageBody": "three \U0001f9fe\t\ue000\ufffd"},
        ],
    )
    # Then that entry alone is reported failed with SQS's code, and the others are queued
    assert [(entry["Id"], entry["Code"], entry["SenderFault"]) for entry in answer["Failed"]] == [
        ("bad", "InvalidMessageContents", True)
    ]
    assert sorted(entry["Id"] for entry in answer["Successful"]) == ["good-1", "good-2"]
    assert len(receive_all(client, queue_url)) == 2


def test_the_queue_adapter_names_the_invoice_the_local_queue_refused(
    sqs: tuple["SQSClient", str],
) -> None:
    client, queue_url = sqs
    # Given one invoice SQS carries and one it cannot (a message ingest's own check would never build)
    good, bad = invoice("FY-OK"), invoice("FY-BAD", invoiceNumber="INV-\ufffe")
    messages = [QueuedInvoice(invoice=item, content_hash="h", accepted_at=0.0) for item in (good, bad)]
    # When the relay's queue adapter sends both
    with pytest.raises(QueueUnavailableError) as unavailable:
        SqsInvoiceQueue(queue_url, client, pause=0.0).send(messages)
    # Then it names only the refused one, and the other is queued
    assert unavailable.value.unsent == (bad.key,)
    assert len(receive_all(client, queue_url)) == 1
