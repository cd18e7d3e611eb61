"""The local SQS event source follows Lambda's event source mapping rules (issue 3, point 1).

Every test runs against moto in server mode over real HTTP, with a stand-in handler in
place of the dispatcher, on queues with visibility timeouts of a second or two.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models import SqsModel

from relay_local.event_source import MAX_PAYLOAD_BYTES, SqsEventSource
from relay_local.lambda_context import LambdaContext, LambdaFunction
from relay_local.stack import EventSourceConfig, MotoServer

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

REGION = "ap-south-1"
PARTIAL = ("ReportBatchItemFailures",)


class StandInDispatcher:
    """Records every batch it is given and answers with `answer(records)`."""

    def __init__(
        self, answer: Callable[[list[dict[str, Any]]], Any] = lambda _: None, delay: float = 0
    ) -> None:
        self.answer = answer
        self.delay = delay
        self.batches: list[tuple[float, list[dict[str, Any]]]] = []
        self.contexts: list[LambdaContext] = []
        self.active = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> Any:
        with self._lock:
            self.batches.append((time.monotonic(), event["Records"]))
            self.contexts.append(context)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay)
            return self.answer(event["Records"])
        finally:
            with self._lock:
                self.active -= 1

    def ids(self) -> list[str]:
        return [record["messageId"] for _, batch in self.batches for record in batch]


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def sqs() -> Iterator[SQSClient]:
    with MotoServer() as server:
        yield server.client("sqs")


@pytest.fixture
def make_queue(sqs: SQSClient) -> Callable[..., tuple[str, str]]:
    """A fresh queue (and dead-letter queue when max_receive_count is given): (url, dlq url)."""

    def make(visibility_timeout: int = 2, max_receive_count: int | None = None) -> tuple[str, str]:
        name = f"q-{uuid.uuid4().hex[:12]}"
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        attributes: dict[QueueAttributeNameType, str] = {"VisibilityTimeout": str(visibility_timeout)}
        if max_receive_count is not None:
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
                    "maxReceiveCount": max_receive_count,
                }
            )
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return url, dlq_url

    return make


@pytest.fixture
def start_source(sqs: SQSClient) -> Iterator[Callable[..., SqsEventSource]]:
    """Starts event sources for a test and stops whatever is left running at its end."""
    started: list[SqsEventSource] = []

    def start(
        queue_url: str,
        handler: StandInDispatcher,
        *,
        batch_size: int = 10,
        window: int = 0,
        max_concurrency: int = 2,
        response_types: tuple[str, ...] = PARTIAL,
        timeout: float = 10,
        client: SQSClient | None = None,
    ) -> SqsEventSource:
        config = EventSourceConfig(queue_url, batch_size, window, max_concurrency, response_types)
        function = LambdaFunction("DispatchFunction", handler, timeout, region=REGION)
        source = SqsEventSource(client or sqs, config, function)
        started.append(source)
        source.start()
        return source

    yield start
    for source in started:
        source.stop()


def send(sqs: SQSClient, queue_url: str, count: int, body: str = "invoice") -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 10):
        entries = [
            {"Id": str(n), "MessageBody": f"{body}-{start + n}"} for n in range(min(10, count - start))
        ]
        result = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
        ids.extend(entry["MessageId"] for entry in result["Successful"])
    return ids


def messages_on_queue(sqs: SQSClient, queue_url: str) -> int:
    """Messages SQS still holds, visible or in flight."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(count) for count in attributes.values())


def visible_again(sqs: SQSClient, queue_url: str, count: int, wait: int = 5) -> list[str]:
    """Ids of the messages a plain consumer receives, until `count` of them or `wait` seconds."""
    found: list[str] = []
    deadline = time.monotonic() + wait
    while len(found) < count and time.monotonic() < deadline:
        found += [
            message["MessageId"]
            for message in sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30
            ).get("Messages", [])
        ]
    return found


def test_long_polls_with_all_attributes(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given an idle event source on an empty queue, watching its ReceiveMessage calls
    queue_url, _ = make_queue()
    calls: list[dict[str, Any]] = []
    watched = boto3.client(
        "sqs",
        endpoint_url=sqs.meta.endpoint_url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    watched.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage", lambda params, **_: calls.append(params)
    )
    handler = StandInDispatcher()
    start_source(queue_url, handler, batch_size=1, client=watched)
    time.sleep(2)
    idle_calls = len(calls)
    # When a message arrives
    sent_at = time.monotonic()
    send(sqs, queue_url, 1)
    wait_until(lambda: len(handler.batches) == 1)
    # Then it was long polling (few calls while idle) and the message came at once
    assert idle_calls <= 3
    assert handler.batches[0][0] - sent_at < 0.5
    assert all(call["WaitTimeSeconds"] >= 1 for call in calls[:idle_calls])
    assert all(call["MessageSystemAttributeNames"] == ["All"] for call in calls)
    assert all(call["MessageAttributeNames"] == ["All"] for call in calls)


def test_records_have_lambdas_sqs_event_shape(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a message with string, number and binary attributes
    queue_url, _ = make_queue()
    sent = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody='{"orderId": "FY1"}',
        MessageAttributes={
            "source": {"DataType": "String", "StringValue": "erp"},
            "attempt": {"DataType": "Number", "StringValue": "1"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        },
    )
    handler = StandInDispatcher()
    # When the event source delivers it
    start_source(queue_url, handler, batch_size=1)
    wait_until(lambda: len(handler.batches) == 1)
    # Then the record is the one Lambda builds, and Powertools' SQS model parses it
    (record,) = handler.batches[0][1]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    assert record["messageId"] == sent["MessageId"]
    assert record["body"] == '{"orderId": "FY1"}'
    assert record["md5OfBody"] == hashlib.md5(b'{"orderId": "FY1"}').hexdigest()  # noqa: S324
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queue_arn["Attributes"]["QueueArn"]
    assert record["awsRegion"] == REGION
    assert record["receiptHandle"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"} <= set(record["attributes"])
    assert record["messageAttributes"] == {
        "source": {
            "stringValue": "erp",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "attempt": {
            "stringValue": "1",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\xff").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    SqsModel.model_validate({"Records": [record]})
    context = handler.contexts[0]
    assert context.function_name == "DispatchFunction"
    assert 0 < context.get_remaining_time_in_millis() <= 10_000


@pytest.mark.parametrize("batch_size", [10, 20])
def test_batches_never_exceed_batch_size(
    sqs: SQSClient,
    make_queue: Callable[..., tuple[str, str]],
    start_source: Callable[..., Any],
    batch_size: int,
) -> None:
    # Given 25 messages waiting
    queue_url, _ = make_queue()
    sent = send(sqs, queue_url, 25)
    handler = StandInDispatcher()
    # When an event source with this batch size drains the queue
    source = start_source(queue_url, handler, batch_size=batch_size, window=1, max_concurrency=2)
    wait_until(lambda: source.tally().deleted == 25)
    # Then every message came once, in batches of at most batch_size (filled beyond SQS's 10)
    sizes = [len(batch) for _, batch in handler.batches]
    assert sorted(handler.ids()) == sorted(sent)
    assert max(sizes) == batch_size
    assert all(size <= batch_size for size in sizes)


def test_batching_window_gathers_messages_that_arrive_later(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given an event source with a 2 s batching window
    queue_url, _ = make_queue(visibility_timeout=10)
    handler = StandInDispatcher()
    start_source(queue_url, handler, batch_size=10, window=2)
    # When one message arrives, and another 0.8 s later
    first_sent_at = time.monotonic()
    send(sqs, queue_url, 1)
    time.sleep(0.8)
    send(sqs, queue_url, 1)
    wait_until(lambda: len(handler.ids()) == 2)
    # Then both came in one batch, invoked once the window had passed
    assert len(handler.batches) == 1
    assert handler.batches[0][0] - first_sent_at >= 1.9


def test_full_batch_does_not_wait_for_the_window(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given five messages waiting and a 10 s window
    queue_url, _ = make_queue()
    send(sqs, queue_url, 5)
    handler = StandInDispatcher()
    started_at = time.monotonic()
    # When an event source with batch size 5 starts
    start_source(queue_url, handler, batch_size=5, window=10)
    wait_until(lambda: len(handler.batches) == 1)
    # Then the full batch is invoked without waiting for the window
    assert handler.batches[0][0] - started_at < 2
    assert len(handler.batches[0][1]) == 5


def test_batch_stays_within_lambdas_payload_limit(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given 26 messages of 250 KB each: 6.5 MB, over Lambda's 6 MB invocation payload
    queue_url, _ = make_queue(visibility_timeout=10)
    sent = [
        sqs.send_message(QueueUrl=queue_url, MessageBody=f"{n:03}" + "x" * 250_000)["MessageId"]
        for n in range(26)
    ]
    handler = StandInDispatcher()
    # When a batch-size-100 event source drains the queue
    source = start_source(queue_url, handler, batch_size=100, window=1)
    wait_until(lambda: source.tally().deleted == 26)
    # Then no batch passed 6 MB and every message was delivered once
    for _, batch in handler.batches:
        assert len(json.dumps({"Records": batch})) <= MAX_PAYLOAD_BYTES
    assert len(handler.batches) >= 2
    assert sorted(handler.ids()) == sorted(sent)


def test_partial_failure_deletes_only_the_others(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a handler that reports two of five messages as failed on their first receive
    queue_url, _ = make_queue(visibility_timeout=2)
    sent = send(sqs, queue_url, 5)
    failing = set(sent[:2])

    def answer(records: list[dict[str, Any]]) -> dict[str, Any]:
        first = [r for r in records if r["attributes"]["ApproximateReceiveCount"] == "1"]
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]} for r in first if r["messageId"] in failing
            ]
        }

    handler = StandInDispatcher(answer)
    # When the event source runs until everything is deleted
    source = start_source(queue_url, handler, batch_size=5, window=1)
    wait_until(lambda: source.tally().deleted == 5)
    # Then only the two failed messages came back, and only once each
    assert {r["messageId"] for r in handler.batches[0][1]} == set(sent)
    redelivered = [record for _, batch in handler.batches[1:] for record in batch]
    assert sorted(r["messageId"] for r in redelivered) == sorted(failing)
    assert {r["attributes"]["ApproximateReceiveCount"] for r in redelivered} == {"2"}
    assert source.tally().failed_back == 2


def test_failed_message_returns_only_after_its_visibility_timeout(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a queue with a 2 s visibility timeout and a handler failing the first receive
    queue_url, _ = make_queue(visibility_timeout=2)
    (message_id,) = send(sqs, queue_url, 1)

    def answer(records: list[dict[str, Any]]) -> dict[str, Any]:
        first = records[0]["attributes"]["ApproximateReceiveCount"] == "1"
        return {"batchItemFailures": [{"itemIdentifier": message_id}] if first else []}

    handler = StandInDispatcher(answer)
    # When the event source runs
    source = start_source(queue_url, handler, batch_size=1)
    wait_until(lambda: source.tally().deleted == 1)
    # Then the message came back once, not before its visibility timeout had passed
    assert handler.ids() == [message_id, message_id]
    assert handler.batches[1][0] - handler.batches[0][0] >= 1.9


def test_exception_returns_the_whole_batch(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a handler that raises on its first batch
    queue_url, _ = make_queue(visibility_timeout=2)
    sent = send(sqs, queue_url, 4)

    def answer(records: list[dict[str, Any]]) -> None:
        if records[0]["attributes"]["ApproximateReceiveCount"] == "1":
            raise RuntimeError("Fynd unreachable")

    handler = StandInDispatcher(answer)
    # When the event source runs until everything is deleted
    source = start_source(queue_url, handler, batch_size=4, window=1)
    wait_until(lambda: source.tally().deleted == 4)
    # Then the whole batch came back and was delivered again
    assert sorted(handler.ids()) == sorted(sent + sent)
    assert source.tally().failed_back == 4


def test_foreign_item_identifier_returns_the_whole_batch(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a handler that names a message id that is not in its batch
    queue_url, _ = make_queue(visibility_timeout=2)
    sent = send(sqs, queue_url, 3)
    handler = StandInDispatcher(
        lambda _: {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]}
    )
    # When it has handled one batch and the visibility timeout has passed
    source = start_source(queue_url, handler, batch_size=3, window=1)
    wait_until(lambda: source.tally().batches == 1)
    source.stop()
    # Then the whole batch is back on the queue
    assert sorted(visible_again(sqs, queue_url, count=3)) == sorted(sent)
    assert source.tally().deleted == 0


@pytest.mark.parametrize(
    "answer",
    [
        {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"messageId": "wrong-key"}]},
        {"batchItemFailures": "not a list"},
        "not an object",
    ],
    ids=["foreign-id", "empty-id", "null-id", "wrong-key", "not-a-list", "not-an-object"],
)
def test_invalid_failure_report_returns_the_whole_batch(
    sqs: SQSClient,
    make_queue: Callable[..., tuple[str, str]],
    start_source: Callable[..., Any],
    answer: Any,
) -> None:
    # Given a handler whose batchItemFailures answer Lambda would not accept
    queue_url, _ = make_queue(visibility_timeout=2)
    sent = send(sqs, queue_url, 3)
    handler = StandInDispatcher(lambda _: answer)
    # When it has handled one batch
    source = start_source(queue_url, handler, batch_size=3, window=1)
    wait_until(lambda: source.tally().batches == 1)
    source.stop()
    # Then nothing was deleted: all of the batch is still on the queue
    assert source.tally().deleted == 0
    assert messages_on_queue(sqs, queue_url) == len(sent)


@pytest.mark.parametrize("answer", [None, {}, {"batchItemFailures": []}], ids=str)
def test_empty_answer_means_every_message_succeeded(
    sqs: SQSClient,
    make_queue: Callable[..., tuple[str, str]],
    start_source: Callable[..., Any],
    answer: Any,
) -> None:
    # Given a handler answering with no failures
    queue_url, _ = make_queue()
    send(sqs, queue_url, 3)
    handler = StandInDispatcher(lambda _: answer)
    # When it has handled the batch
    source = start_source(queue_url, handler, batch_size=3, window=1)
    wait_until(lambda: source.tally().batches == 1)
    # Then the whole batch was deleted
    assert source.tally().deleted == 3
    assert source.tally().failed_back == 0


def test_failures_are_ignored_without_report_batch_item_failures(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a mapping without ReportBatchItemFailures and a handler naming a failure
    queue_url, _ = make_queue()
    sent = send(sqs, queue_url, 2)
    handler = StandInDispatcher(lambda _: {"batchItemFailures": [{"itemIdentifier": sent[0]}]})
    # When it has handled the batch
    source = start_source(queue_url, handler, batch_size=2, window=1, response_types=())
    wait_until(lambda: source.tally().batches == 1)
    # Then Lambda's plain rule applies: a batch that did not raise is deleted whole
    assert source.tally().deleted == 2


def test_handler_past_its_timeout_fails_the_whole_batch(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a function with a 0.2 s timeout whose handler takes 0.4 s
    queue_url, _ = make_queue(visibility_timeout=2)
    send(sqs, queue_url, 2)
    handler = StandInDispatcher(delay=0.4)
    # When it has handled one batch
    source = start_source(queue_url, handler, batch_size=2, window=1, timeout=0.2)
    wait_until(lambda: source.tally().batches == 1)
    # Then nothing was deleted, as Lambda would have ended the invocation as failed
    assert source.tally().deleted == 0
    assert source.tally().failed_back == 2


def test_redrive_to_dead_letter_queue_after_max_receive_count(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a queue that dead-letters after 2 receives, and a handler that always fails
    queue_url, dlq_url = make_queue(visibility_timeout=1, max_receive_count=2)
    (message_id,) = send(sqs, queue_url, 1)

    def answer(records: list[dict[str, Any]]) -> None:
        raise RuntimeError("Fynd answers 503")

    handler = StandInDispatcher(answer)
    # When the event source keeps receiving it
    start_source(queue_url, handler, batch_size=1)
    moved = visible_again(sqs, dlq_url, count=1, wait=8)
    # Then it was handled exactly maxReceiveCount times, then moved to the dead-letter queue
    assert moved == [message_id]
    assert handler.ids() == [message_id, message_id]


def test_never_more_than_max_concurrency_batches_in_flight(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given eight single-message batches that each take 0.3 s
    queue_url, _ = make_queue(visibility_timeout=10)
    send(sqs, queue_url, 8)
    handler = StandInDispatcher(delay=0.3)
    # When an event source with MaximumConcurrency 2 drains them
    source = start_source(queue_url, handler, batch_size=1, max_concurrency=2)
    wait_until(lambda: source.tally().deleted == 8)
    # Then two batches ran at once, never more
    assert handler.peak == 2
    assert source.tally().batches_in_flight == 0


def test_stop_finishes_in_flight_batches_and_leaves_no_thread(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given an event source in the middle of a 0.5 s batch
    queue_url, _ = make_queue(visibility_timeout=10)
    send(sqs, queue_url, 1)
    handler = StandInDispatcher(delay=0.5)
    source = start_source(queue_url, handler, batch_size=1)
    wait_until(lambda: handler.active == 1)
    assert any(t.name.startswith("DispatchFunction") for t in threading.enumerate())
    # When it is stopped
    stopping_at = time.monotonic()
    source.stop()
    # Then the batch was finished and deleted, promptly, and no thread of it is left
    assert time.monotonic() - stopping_at < 2.5
    assert source.tally().deleted == 1
    assert source.tally().batches_in_flight == 0
    assert [t.name for t in threading.enumerate() if t.name.startswith("DispatchFunction")] == []


def test_a_message_received_again_within_the_window_is_in_its_batch_once(
    sqs: SQSClient, make_queue: Callable[..., tuple[str, str]], start_source: Callable[..., Any]
) -> None:
    # Given a visibility timeout shorter than the batching window (SQS hands the message out again)
    queue_url, _ = make_queue(visibility_timeout=1)
    (message_id,) = send(sqs, queue_url, 1)
    handler = StandInDispatcher(lambda records: {"batchItemFailures": []})
    # When the event source gathers a batch for 3 s
    source = start_source(queue_url, handler, batch_size=10, window=3)
    wait_until(lambda: source.tally().deleted == 1)
    # Then the first batch holds the message once, with its newest receipt (the older ones are void)
    batch = handler.batches[0][1]
    assert [record["messageId"] for record in batch] == [message_id]
    assert int(batch[0]["attributes"]["ApproximateReceiveCount"]) > 1
