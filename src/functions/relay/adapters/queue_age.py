"""How far back the invoice queue reaches, from CloudWatch's ApproximateAgeOfOldestMessage.

SQS's own GetQueueAttributes counts messages but gives no age; the age is a CloudWatch metric
of the queue (namespace AWS/SQS, dimension QueueName), published each minute. A datapoint
whose period starts at T with a Maximum of A seconds says: at T the oldest message still on
the queue was sent at T - A or later, so nothing sent before T - A was on it then (and a
message never gets older in the queue than its send time). That bound only ages as the
datapoints lag, which makes the reconciler wait a little longer, never call a waiting message lost.

Any failure (CloudWatch refuses, times out, has no datapoint) is "unknown" (None), which the
reconciler reads as "no backlog": a copy too many, never an invoice lost. AWS documents what
the metric leaves out ("Available CloudWatch metrics for Amazon SQS", sqs-available-cloudwatch-
metrics.html): on a standard queue a message received three times or more without being deleted
is moved to the back of the queue and the metric points at the oldest message received fewer
times. The bound above is about those; relay.domain.reconcile says why it also covers the
others (they wait at the back, behind what the queue has since passed).
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from relay.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

LOOK_BACK_SECONDS = 900
"""How far back a datapoint is looked for: SQS publishes every minute while the queue is active."""


class CloudWatchQueueAge:
    def __init__(
        self, queue_url: str, client: "CloudWatchClient", *, clock: Callable[[], float] = time.time
    ) -> None:
        self._queue_name = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._client = client
        self._clock = clock

    def oldest_sent_at(self) -> float | None:
        """See relay.domain.reconcile.QueueAge: T - A of the latest one-minute datapoint."""
        now = self._clock()
        try:
            answer = self._client.get_metric_data(
                MetricDataQueries=[
                    {
                        "Id": "age",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": "AWS/SQS",
                                "MetricName": "ApproximateAgeOfOldestMessage",
                                "Dimensions": [{"Name": "QueueName", "Value": self._queue_name}],
                            },
                            "Period": 60,
                            "Stat": "Maximum",
                        },
                    }
                ],
                StartTime=datetime.fromtimestamp(now - LOOK_BACK_SECONDS, UTC),
                EndTime=datetime.fromtimestamp(now, UTC),
                ScanBy="TimestampDescending",
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning("queue age unknown", extra={"error": type(error).__name__})
            return None
        results = answer.get("MetricDataResults", [])
        points = (
            list(zip(results[0].get("Timestamps", []), results[0].get("Values", []), strict=False))
            if results
            else []
        )
        if not points:
            logger.info("queue age unknown: no datapoint", extra={"queue": self._queue_name})
            return None
        at, age = max(points, key=lambda point: point[0])
        return at.timestamp() - float(age)
