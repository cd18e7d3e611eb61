"""Lambda's DynamoDB stream event source mapping, emulated against a local stream (moto's).

It follows the deployed rules the relay depends on:

- every shard is read from its StartingPosition, in order, batches of up to `batch_size`;
- records that match none of the FilterCriteria patterns are dropped (relay_local.event_filter);
- a batch that fails whole (an exception, a timeout, an answer Lambda cannot read) is retried,
  unchanged, until it succeeds (MaximumRetryAttempts -1): the shard waits behind it;
- with ReportBatchItemFailures, an answer naming a record's SequenceNumber is a checkpoint:
  that record and every later one are retried, the ones before it are done.

Retries pause `retry_pause_seconds` (Lambda retries at once; a pause keeps a local run from spinning).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from relay_local.counting import Counters
from relay_local.event_filter import matches_any
from relay_local.lambda_context import Function

if TYPE_CHECKING:
    from relay_local.stack import StreamSourceConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSourceTally:
    read: int = 0
    delivered: int = 0
    filtered_out: int = 0
    failed_batches: int = 0


class DynamoDbStreamSource:
    def __init__(
        self,
        streams: Any,
        config: StreamSourceConfig,
        function: Function,
        *,
        poll_seconds: float = 0.2,
        retry_pause_seconds: float = 1.0,
    ) -> None:
        self._streams = streams
        self._config = config
        self._function = function
        self._poll_seconds = poll_seconds
        self._retry_pause = retry_pause_seconds
        self._partial = "ReportBatchItemFailures" in config.function_response_types
        self._stopping = threading.Event()
        self._tally = Counters(StreamSourceTally())
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self._function.name}-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading; a batch being delivered finishes first."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._thread = None

    def tally(self) -> StreamSourceTally:
        return self._tally.read()

    def _run(self) -> None:
        iterators: dict[str, str] = {}
        pending: list[dict[str, Any]] = []
        while not self._stopping.is_set():
            try:
                if not pending:
                    pending = self._read(iterators)
                if not pending:
                    self._stopping.wait(self._poll_seconds)
                    continue
            except (BotoCoreError, ClientError):
                logger.exception("reading the stream %s failed; retrying", self._config.stream_arn)
                self._stopping.wait(self._retry_pause)
                continue
            batch = pending[: self._config.batch_size]
            done = self._deliver(batch)
            pending = pending[done:]
            if done < len(batch):
                self._stopping.wait(self._retry_pause)

    def _read(self, iterators: dict[str, str]) -> list[dict[str, Any]]:
        """The next records of every shard that pass the filters. (`streams` is a boto3
        dynamodbstreams client; the project installs no stubs for it.)"""
        shards = self._streams.describe_stream(StreamArn=self._config.stream_arn)["StreamDescription"][
            "Shards"
        ]
        found: list[dict[str, Any]] = []
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in iterators:
                iterators[shard_id] = self._streams.get_shard_iterator(
                    StreamArn=self._config.stream_arn,
                    ShardId=shard_id,
                    ShardIteratorType=self._config.starting_position,
                )["ShardIterator"]
            answer = self._streams.get_records(ShardIterator=iterators[shard_id], Limit=1000)
            iterators[shard_id] = answer.get("NextShardIterator", iterators[shard_id])
            records: list[dict[str, Any]] = [dict(record) for record in answer.get("Records", [])]
            kept = [record for record in records if matches_any(self._config.filters, record)]
            self._tally.add(read=len(records), filtered_out=len(records) - len(kept))
            found += kept
        return found

    def _deliver(self, batch: list[dict[str, Any]]) -> int:
        """How many records of the batch are done (all, none, or those before the checkpoint)."""
        try:
            answer = self._function.invoke({"Records": _jsonable(batch)})
        except Exception:
            logger.exception("%s failed; the batch is retried", self._function.name)
            self._tally.add(failed_batches=1)
            return 0
        failures = answer.get("batchItemFailures") if isinstance(answer, dict) and self._partial else None
        if not failures:
            self._tally.add(delivered=len(batch))
            return len(batch)
        sequence = [record["dynamodb"]["SequenceNumber"] for record in batch]
        named = {item.get("itemIdentifier") for item in failures if isinstance(item, dict)}
        done = next((index for index, number in enumerate(sequence) if number in named), 0)
        self._tally.add(delivered=done, failed_batches=1)
        return done


def _jsonable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """boto3 hands ApproximateCreationDateTime as a datetime; Lambda's event carries epoch seconds."""
    converted = []
    for record in records:
        stream = dict(record.get("dynamodb", {}))
        created = stream.get("ApproximateCreationDateTime")
        if created is not None and hasattr(created, "timestamp"):
            stream["ApproximateCreationDateTime"] = int(created.timestamp())
        converted.append({**record, "dynamodb": stream})
    return converted
