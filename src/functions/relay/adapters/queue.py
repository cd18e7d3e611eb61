"""The invoice queue on SQS. `send` returns only when every message is durably queued."""

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from relay.domain.messages import QueuedInvoice
from relay.domain.ports import QueueUnavailableError
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
    def __init__(self, queue_url: str, client: "SQSClient", *, pause: float = 0.1) -> None:
        self._url = queue_url
        self._client = client
        self._pause = pause

    def send(self, messages: Sequence[QueuedInvoice]) -> None:
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            self._send_batch(messages[start : start + SQS_BATCH_LIMIT])

    def _send_batch(self, messages: Sequence[QueuedInvoice]) -> None:
        """SendMessageBatch can succeed for some entries and fail for others: resend the failed ones."""
        waiting = {str(index): message for index, message in enumerate(messages)}
        for attempt in range(SEND_ATTEMPTS):
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
                    return
                logger.warning(
                    "SQS refused some messages", extra={"failed": len(waiting), "attempt": attempt}
                )
            time.sleep(self._pause * 2**attempt)
        raise QueueUnavailableError(f"{len(waiting)} invoice(s) could not be queued")

    def send_later(self, message: QueuedInvoice, delay_seconds: int) -> None:
        self._client.send_message(
            QueueUrl=self._url,
            MessageBody=message.to_body(),
            MessageAttributes=_attributes(message),
            DelaySeconds=delay_seconds,
        )

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
