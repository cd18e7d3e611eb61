"""Lambda's SQS event source mapping, emulated against any SQS endpoint (moto locally).

moto's own mapping deletes every message a handler was given, so the relay's partial batch
responses would be lost. This consumer follows the deployed rules instead:

- long polling, batches of up to `batch_size` gathered for up to the batching window
  (counted from the first message; SQS hands out at most 10 per receive), and never more
  than Lambda's 6 MB invocation payload;
- at most `max_concurrency` batches in flight (MaximumConcurrency);
- with ReportBatchItemFailures, only messages not named in `batchItemFailures` are deleted.
  An empty or null answer is full success. An exception, a timeout, an answer that is not
  an object, or a failure entry whose itemIdentifier is missing, empty or not in the batch
  fails the whole batch, as Lambda documents;
- a failed message is simply not deleted: SQS returns it after its visibility timeout and
  moves it to the dead-letter queue after maxReceiveCount, as the real service does.

With `redeliver` (a probability, relay_local.faults), a message received for one batch is
also handed to the next batch that starts while the first is still in flight: SQS's
at-least-once delivery, the same message id reaching two concurrent invocations.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from relay_local.counting import Counters
from relay_local.faults import Chance
from relay_local.lambda_context import Function
from relay_local.lambda_events import sqs_record

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

    from relay_local.stack import EventSourceConfig

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
_MAX_PER_RECEIVE = 10  # SQS ReceiveMessage limit
_MAX_WAIT_SECONDS = 20  # SQS long-poll limit


@dataclass(frozen=True)
class EventSourceTally:
    """Counters since start: batches invoked, messages received, deleted and left to return."""

    batches: int = 0
    received: int = 0
    deleted: int = 0
    failed_back: int = 0
    batches_in_flight: int = 0
    redelivered: int = 0
    failed_batches: int = 0
    """Invocations that failed whole (an exception, a timeout, an answer Lambda cannot read)."""


class SqsEventSource:
    """Polls one queue and invokes one function with Lambda-shaped SQS events.

    `poll_wait_seconds` is the idle long-poll length. Lambda uses 20 s; a shorter one costs
    no latency (a long poll returns as soon as a message arrives) and bounds how long
    `stop()` waits for the poller.
    """

    def __init__(
        self,
        sqs: SQSClient,
        config: EventSourceConfig,
        function: Function,
        *,
        poll_wait_seconds: int = 1,
        redeliver: float = 0.0,
        chance: Chance | None = None,
    ) -> None:
        self._sqs = sqs
        self._config = config
        self._function = function
        self._poll_wait_seconds = min(poll_wait_seconds, _MAX_WAIT_SECONDS)
        self._partial = "ReportBatchItemFailures" in config.function_response_types
        self._slots = threading.BoundedSemaphore(config.max_concurrency)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._tally = Counters(EventSourceTally())
        self._queue_arn = ""
        self._poller: threading.Thread | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._redeliver = redeliver
        self._chance = chance or Chance(None)
        self._in_flight: dict[str, int] = {}
        """Message ids in batches in flight, and in how many."""
        self._copies: list[dict[str, Any]] = []
        """Records to hand a second time to the next batch, while their first batch runs."""

    def start(self) -> None:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._config.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]
        self._queue_arn = attributes["QueueArn"]
        self._stopping.clear()
        self._workers = ThreadPoolExecutor(
            self._config.max_concurrency, thread_name_prefix=f"{self._function.name}-batch"
        )
        self._poller = threading.Thread(target=self._poll, name=f"{self._function.name}-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        """Stop polling, let batches already received finish, and end every thread."""
        self._stopping.set()
        if self._poller is not None:
            self._poller.join()
        if self._workers is not None:
            self._workers.shutdown(wait=True)
        self._poller = self._workers = None

    def __enter__(self) -> SqsEventSource:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def tally(self) -> EventSourceTally:
        return self._tally.read()

    def _poll(self) -> None:
        assert self._workers is not None
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue  # MaximumConcurrency batches already in flight
            try:
                batch = self._gather()
            except (BotoCoreError, ClientError):
                logger.exception("receiving from %s failed; retrying", self._config.queue_url)
                batch = []
                self._stopping.wait(1)
            batch = self._with_copies(batch)
            if batch:
                self._tally.add(batches_in_flight=1)
                with self._lock:
                    for record in batch:
                        self._in_flight[record["messageId"]] = self._in_flight.get(record["messageId"], 0) + 1
                self._workers.submit(self._run, batch)
            else:
                self._slots.release()

    def _with_copies(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add the copies waiting for a concurrent batch, and pick this batch's own (fault `redeliver`)."""
        if self._redeliver <= 0:
            return batch
        with self._lock:
            ids = {record["messageId"] for record in batch}
            copies = [
                c for c in self._copies if c["messageId"] in self._in_flight and c["messageId"] not in ids
            ]
            self._copies = []
        self._copies.extend(record for record in batch if self._chance(self._redeliver))
        if copies:
            self._tally.add(redelivered=len(copies))
        return [*batch, *copies]

    def _gather(self) -> list[dict[str, Any]]:
        """One batch: up to batch_size records within the window and the payload limit."""
        records: list[dict[str, Any]] = []
        payload = 0
        window_ends: float | None = None
        while len(records) < self._config.batch_size and not self._stopping.is_set():
            if window_ends is None:
                wait = self._poll_wait_seconds
            else:
                remaining = window_ends - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(_MAX_WAIT_SECONDS, int(remaining))  # SQS takes whole seconds
            messages = self._sqs.receive_message(
                QueueUrl=self._config.queue_url,
                MaxNumberOfMessages=min(_MAX_PER_RECEIVE, self._config.batch_size - len(records)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages and wait == 0:
                self._stopping.wait(0.05)  # the window's last second: short polls, not a spin
            if messages and window_ends is None:
                window_ends = time.monotonic() + self._config.batching_window_seconds
            self._tally.add(received=len(messages))
            for position, message in enumerate(messages):
                record = sqs_record(message, self._queue_arn, self._sqs.meta.region_name)
                size = len(json.dumps(record).encode())
                if records and payload + size > MAX_PAYLOAD_BYTES:
                    self._give_back(messages[position:])
                    return records
                earlier = next(
                    (i for i, r in enumerate(records) if r["messageId"] == record["messageId"]), None
                )
                if earlier is not None:
                    # Its visibility ran out within the window and SQS handed it out again: the
                    # earlier receipt handle is void, so the newer copy replaces it.
                    payload -= len(json.dumps(records.pop(earlier)).encode())
                    self._tally.add(received=-1)
                records.append(record)
                payload += size
        return records

    def _give_back(self, messages: list[MessageTypeDef]) -> None:
        """Make messages that did not fit the payload visible again at once."""
        entries = [
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}
            for index, message in enumerate(messages)
        ]
        self._sqs.change_message_visibility_batch(QueueUrl=self._config.queue_url, Entries=entries)  # type: ignore[arg-type]
        self._tally.add(received=-len(messages))

    def _run(self, records: list[dict[str, Any]]) -> None:
        try:
            failed = self._invoke(records)
            done = [] if failed is None else [r for r in records if r["messageId"] not in failed]
            self._delete(done)
            self._tally.add(batches=1, deleted=len(done), failed_back=len(records) - len(done))
        except (BotoCoreError, ClientError):
            logger.exception("settling a batch on %s failed", self._config.queue_url)
        finally:
            with self._lock:
                for record in records:
                    left = self._in_flight.pop(record["messageId"], 1) - 1
                    if left:
                        self._in_flight[record["messageId"]] = left
            self._tally.add(batches_in_flight=-1)
            self._slots.release()

    def _invoke(self, records: list[dict[str, Any]]) -> set[str] | None:
        """Ids to leave on the queue, or None when the whole batch has failed."""
        try:
            answer = self._function.invoke({"Records": records})
        except Exception:
            logger.exception("%s failed; the whole batch returns", self._function.name)
            self._tally.add(failed_batches=1)
            return None
        if not self._partial:
            return set()
        failed = _failed_ids(answer, {record["messageId"] for record in records})
        if failed is None:
            logger.error("%s answered %r; the whole batch returns", self._function.name, answer)
            self._tally.add(failed_batches=1)
        return failed

    def _delete(self, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), _MAX_PER_RECEIVE):
            chunk = records[start : start + _MAX_PER_RECEIVE]
            result = self._sqs.delete_message_batch(
                QueueUrl=self._config.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
                    for index, record in enumerate(chunk)
                ],
            )
            for failure in result.get("Failed", []):
                logger.error("deleting a message failed: %s", failure)


def _failed_ids(answer: Any, batch_ids: set[str]) -> set[str] | None:
    """Lambda's reading of a ReportBatchItemFailures answer; None means "whole batch failed"."""
    if answer is None:
        return set()
    if not isinstance(answer, dict):
        return None
    failures = answer.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    ids = {item.get("itemIdentifier") if isinstance(item, dict) else None for item in failures}
    return ids if ids <= batch_ids else None  # type: ignore[return-value]
