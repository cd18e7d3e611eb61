"""The invoice queue on SQS. `send` returns only when every message is durably queued.

SendMessageBatch takes at most 10 entries and MAX_MESSAGE_BYTES in all, so messages go in
batches bounded by both, sent concurrently. Entries SQS refuses are sent again, up to SEND_ATTEMPTS times; with
a `budget_seconds` (ingest: see `relay.wiring`), a resend starts only while its worst case,
`attempt_seconds`, still fits in the budget, so `send` ends within it: queued, or
QueueUnavailableError. The budget is at least one attempt, which always goes.
"""

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from relay.domain.errors import QueueUnavailableError
from relay.domain.messages import MAX_MESSAGE_BYTES, QueuedInvoice
from relay.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

SQS_BATCH_LIMIT = 10
SEND_ATTEMPTS = 4
CORRELATION_ATTRIBUTE = "correlationId"


class SqsInvoiceQueue:
    def __init__(
        self,
        queue_url: str,
        client: "SQSClient",
        *,
        pause: float = 0.1,
        budget_seconds: float | None = None,
        attempt_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = queue_url
        self._client = client
        self._pause = pause
        self._budget = budget_seconds
        self._attempt = attempt_seconds
        self._clock = clock
        self._sleep = sleep

    def send(self, messages: Sequence[QueuedInvoice]) -> None:
        """Every batch is sent at once (one thread each), so a send takes one attempt's time
        whatever the number of batches; QueueUnavailableError names the invoices not queued."""
        deadline = None if self._budget is None else self._clock() + self._budget
        batches = _batches(messages)
        if len(batches) <= 1:
            unsent = [message for batch in batches for message in self._send_batch(batch, deadline)]
        else:
            with ThreadPoolExecutor(max_workers=len(batches), thread_name_prefix="sqs-send") as pool:
                sent = pool.map(lambda batch: self._send_batch(batch, deadline), batches)
                unsent = [message for left in sent for message in left]
        if unsent:
            raise QueueUnavailableError(
                f"{len(unsent)} invoice(s) could not be queued", [message.invoice.key for message in unsent]
            )

    def _fits(self, seconds: float, deadline: float | None) -> bool:
        return deadline is None or self._clock() + seconds <= deadline

    def _send_batch(self, messages: Sequence[QueuedInvoice], deadline: float | None) -> list[QueuedInvoice]:
        """SendMessageBatch can succeed for some entries and fail for others: resend the failed
        ones. The messages SQS never took."""
        waiting = {str(index): message for index, message in enumerate(messages)}
        for attempt in range(SEND_ATTEMPTS):
            # The first attempt always goes: the budget is one attempt at least, by construction
            # (and the caller kept the time for it). A resend goes only while it still fits.
            if attempt and not self._fits(self._attempt, deadline):
                break
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {
                    "Id": entry_id,
                    "MessageBody": message.to_body(),
                    "MessageAttributes": _attributes(message),
                }
                for entry_id, message in waiting.items()
            ]
            try:
                answer = self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
            except (BotoCoreError, ClientError) as error:
                logger.warning(
                    "SQS SendMessageBatch failed",
                    extra={"error": type(error).__name__, "attempt": attempt},
                )
            else:
                waiting = {entry["Id"]: waiting[entry["Id"]] for entry in answer.get("Failed", [])}
                if not waiting:
                    return []
                logger.warning(
                    "SQS refused some messages", extra={"failed": len(waiting), "attempt": attempt}
                )
            pause = self._pause * 2**attempt
            if not self._fits(pause + self._attempt, deadline):
                break
            self._sleep(pause)
        return list(waiting.values())

    def send_later(self, message: QueuedInvoice, delay_seconds: int) -> None:
        """One message, visible after `delay_seconds`; QueueUnavailableError when SQS refuses it."""
        try:
            self._client.send_message(
                QueueUrl=self._url,
                MessageBody=message.to_body(),
                MessageAttributes=_attributes(message),
                DelaySeconds=delay_seconds,
            )
        except (BotoCoreError, ClientError) as error:
            raise QueueUnavailableError(
                f"an invoice could not be queued again ({type(error).__name__})"
            ) from error

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Best effort: if this fails the message still returns, after the queue's own timeout."""
        try:
            self._client.change_message_visibility(
                QueueUrl=self._url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning("could not delay a retried message", extra={"error": type(error).__name__})


def _attributes(message: QueuedInvoice) -> dict[str, "MessageAttributeValueTypeDef"]:
    if not message.correlation_id:
        return {}
    return {CORRELATION_ATTRIBUTE: {"DataType": "String", "StringValue": message.correlation_id}}


def _batches(messages: Sequence[QueuedInvoice]) -> list[list[QueuedInvoice]]:
    """In order, at most SQS_BATCH_LIMIT messages and MAX_MESSAGE_BYTES per batch."""
    batches: list[list[QueuedInvoice]] = []
    size = 0
    for message in messages:
        cost = message.queued_bytes()
        if not batches or len(batches[-1]) == SQS_BATCH_LIMIT or size + cost > MAX_MESSAGE_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(message)
        size += cost
    return batches
