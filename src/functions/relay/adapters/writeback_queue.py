"""The write-back FIFO queue on SQS: one message group per invoice key (relay.domain.writeback).

A message is only the key (`{"key": "<orderId>#<type>"}`): the write-back reads the entry as
it stands when the message is worked, so a message never carries a state that could be stale.
"""

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from relay.domain.invoice import InvoiceKey
from relay.domain.writeback import LedgerChange
from relay.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

SQS_BATCH_LIMIT = 10


def message_body(key: InvoiceKey) -> str:
    return json.dumps({"key": str(key)})


def key_of(body: str) -> InvoiceKey:
    """The key a message names; ValueError for a body that names none."""
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("key"), str):
        raise ValueError('a write-back message is {"key": "<orderId>#<type>"}')
    return InvoiceKey.parse(document["key"])


class SqsWritebackQueue:
    def __init__(self, queue_url: str, client: "SQSClient") -> None:
        self._url = queue_url
        self._client = client

    def send(self, changes: Sequence[LedgerChange]) -> list[LedgerChange]:
        """In stream order, ten at a time; the changes SQS did not take (none sent after a
        batch that failed whole, so the feed resumes from there)."""
        for start in range(0, len(changes), SQS_BATCH_LIMIT):
            batch = list(changes[start : start + SQS_BATCH_LIMIT])
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {
                    "Id": str(index),
                    "MessageBody": message_body(change.key),
                    "MessageGroupId": str(change.key),
                    "MessageDeduplicationId": change.event_id,
                }
                for index, change in enumerate(batch)
            ]
            try:
                answer = self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
            except (BotoCoreError, ClientError) as error:
                logger.warning("write-back queue refused a batch", extra={"error": type(error).__name__})
                return list(changes[start:])
            failed = sorted(int(entry["Id"]) for entry in answer.get("Failed", []))
            if failed:
                logger.warning("write-back queue refused some changes", extra={"failed": len(failed)})
                return [batch[index] for index in failed] + list(changes[start + len(batch) :])
        return []

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Best effort: if this fails the message still returns, after the queue's own timeout."""
        try:
            self._client.change_message_visibility(
                QueueUrl=self._url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning("could not delay a write-back message", extra={"error": type(error).__name__})
