"""relay.adapters.queue_age over in-process moto's CloudWatch: the send time before which no
message is left on the queue, from ApproximateAgeOfOldestMessage; unknown (None) whenever
CloudWatch has no datapoint or cannot be asked, which the reconciler reads as "no backlog"."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from relay.adapters.queue_age import CloudWatchQueueAge

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

QUEUE_URL = "https://sqs.ap-south-1.amazonaws.com/123456789012/relay-InvoiceQueue-ABC"
MINUTE_START = 1_800_000_000.0 - 1_800_000_000.0 % 60


@pytest.fixture
def cloudwatch(monkeypatch: pytest.MonkeyPatch) -> Iterator["CloudWatchClient"]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="ap-south-1")


def age_reported(client: "CloudWatchClient", queue: str, *, at: float, seconds: float) -> None:
    client.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": queue}],
                "Timestamp": datetime.fromtimestamp(at, UTC),
                "Value": seconds,
                "Unit": "Seconds",
            }
        ],
    )


def test_the_latest_datapoint_says_what_was_sent_before_anything_left_on_the_queue(
    cloudwatch: "CloudWatchClient",
) -> None:
    # Given the queue's oldest message 40 minutes old a few minutes ago, and 30 minutes old in the
    # latest minute; and another queue's datapoint
    age_reported(cloudwatch, "relay-InvoiceQueue-ABC", at=MINUTE_START - 300, seconds=2400)
    age_reported(cloudwatch, "relay-InvoiceQueue-ABC", at=MINUTE_START - 60, seconds=1800)
    age_reported(cloudwatch, "other-queue", at=MINUTE_START - 60, seconds=9999)
    age = CloudWatchQueueAge(QUEUE_URL, cloudwatch, clock=lambda: MINUTE_START)
    # Then nothing sent before the latest minute's start less its age is still on the queue
    assert age.oldest_sent_at() == MINUTE_START - 60 - 1800


def test_no_datapoint_is_unknown(cloudwatch: "CloudWatchClient") -> None:
    age = CloudWatchQueueAge(QUEUE_URL, cloudwatch, clock=lambda: MINUTE_START)
    assert age.oldest_sent_at() is None


def test_cloudwatch_refusing_is_unknown_not_an_error(cloudwatch: "CloudWatchClient") -> None:
    # Given CloudWatch refusing the call (a missing permission, throttling)
    def refused(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetMetricData")

    cloudwatch.meta.events.register_first("before-send.cloudwatch.GetMetricData", refused)
    age = CloudWatchQueueAge(QUEUE_URL, cloudwatch, clock=lambda: MINUTE_START)
    # Then the age is unknown: the reconciler falls back to its window
    assert age.oldest_sent_at() is None
