"""The fault layer in front of the local AWS endpoint (relay_local.faults), with a fake moto; and
the template's schedules (relay_local.schedules)."""

import json
import threading
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from relay_local.faults import AwsFaultLayer, Chance, LocalFaults
from relay_local.schedules import LocalSchedules, event_for
from relay_local.stack import LocalStack, Schedule, rate_seconds


class FakeEndpoint:
    """Answers every request 200 and remembers what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = json.loads(request.get_data() or b"{}")
        self.seen.append((request.headers.get("X-Amz-Target", ""), body))
        entries = body.get("Entries", [])
        answer = {"Successful": [{"Id": entry["Id"]} for entry in entries]} if entries else {}
        return Response(json.dumps(answer), content_type="application/x-amz-json-1.0")(
            environ, start_response
        )


def _call(layer: AwsFaultLayer, target: str, body: dict[str, Any], agent: str = "Boto3") -> tuple[int, Any]:
    response = Client(layer).post(
        "/", data=json.dumps(body), headers={"X-Amz-Target": target, "User-Agent": agent}
    )
    return response.status_code, json.loads(response.get_data() or b"{}")


def _layer(**faults: float) -> tuple[AwsFaultLayer, FakeEndpoint]:
    endpoint = FakeEndpoint()
    return AwsFaultLayer(endpoint, LocalFaults(**faults), Chance(1)), endpoint


def test_no_fault_configured_lets_every_request_through_untouched() -> None:
    # Given the layer with every fault off
    layer, endpoint = _layer()
    # When a transaction and a batch send pass
    body = {"Entries": [{"Id": "0"}, {"Id": "1"}]}
    assert _call(layer, "AmazonSQS.SendMessageBatch", body) == (
        200,
        {"Successful": [{"Id": "0"}, {"Id": "1"}]},
    )
    assert _call(layer, "DynamoDB_20120810.TransactWriteItems", {"TransactItems": [{}]})[0] == 200
    # Then both reached the endpoint as sent
    assert [target for target, _ in endpoint.seen] == [
        "AmazonSQS.SendMessageBatch",
        "DynamoDB_20120810.TransactWriteItems",
    ]


def test_dynamodb_throttling_and_transaction_conflicts_are_answered_as_dynamodb_does() -> None:
    # Given throttling on every request
    layer, endpoint = _layer(dynamodb_throttle=1.0)
    # When an item is read, Then it is throttled, and never reaches the table
    status, body = _call(layer, "DynamoDB_20120810.GetItem", {})
    assert (status, body["__type"].rpartition("#")[2]) == (400, "ProvisionedThroughputExceededException")
    # Given conflicts on every write
    layer, endpoint = _layer(dynamodb_conflict=1.0)
    # When a transaction of three items is written
    status, body = _call(layer, "DynamoDB_20120810.TransactWriteItems", {"TransactItems": [{}, {}, {}]})
    # Then it is cancelled with one TransactionConflict reason among None
    assert (status, body["__type"].rpartition("#")[2]) == (400, "TransactionCanceledException")
    assert sorted(reason["Code"] for reason in body["CancellationReasons"]) == [
        "None",
        "None",
        "TransactionConflict",
    ]
    # And a single-item write meets TransactionConflictException; reads pass
    assert _call(layer, "DynamoDB_20120810.UpdateItem", {})[1]["__type"].endswith(
        "#TransactionConflictException"
    )
    assert _call(layer, "DynamoDB_20120810.GetItem", {})[0] == 200
    assert [target for target, _ in endpoint.seen] == ["DynamoDB_20120810.GetItem"]


def test_stale_receipt_handles_delete_nothing_and_refuse_visibility_changes() -> None:
    # Given every receipt handle stale
    layer, endpoint = _layer(stale_delete=1.0, stale_visibility=1.0)
    # When messages are deleted, one and in a batch
    assert _call(layer, "AmazonSQS.DeleteMessage", {"ReceiptHandle": "r"}) == (200, {})
    status, body = _call(layer, "AmazonSQS.DeleteMessageBatch", {"Entries": [{"Id": "0"}, {"Id": "1"}]})
    # Then both answers say done, and nothing reached the queue
    assert (status, body["Successful"], body["Failed"]) == (200, [{"Id": "0"}, {"Id": "1"}], [])
    assert endpoint.seen == []
    # And visibility changes are refused
    status, body = _call(layer, "AmazonSQS.ChangeMessageVisibility", {"ReceiptHandle": "r"})
    assert (status, body["__type"].rpartition("#")[2]) == (400, "MessageNotInflight")
    status, body = _call(layer, "AmazonSQS.ChangeMessageVisibilityBatch", {"Entries": [{"Id": "0"}]})
    assert [failure["Code"] for failure in body["Failed"]] == ["ReceiptHandleIsInvalid"]


def test_send_message_batch_fails_some_entries_and_sends_the_rest() -> None:
    # Given half the entries of a batch send failing
    layer, endpoint = _layer(send_batch_failed=0.5)
    entries = [{"Id": str(index)} for index in range(20)]
    # When a batch of 20 is sent
    status, body = _call(layer, "AmazonSQS.SendMessageBatch", {"QueueUrl": "q", "Entries": entries})
    # Then the answer is 200 with some entries Failed (not the sender's fault), the others sent
    failed = {failure["Id"] for failure in body["Failed"]}
    assert status == 200
    assert 0 < len(failed) < 20
    assert {failure["SenderFault"] for failure in body["Failed"]} == {False}
    assert {entry["Id"] for entry in body["Successful"]} == {entry["Id"] for entry in entries} - failed
    assert [entry["Id"] for entry in endpoint.seen[0][1]["Entries"]] == sorted(
        {entry["Id"] for entry in entries} - failed, key=int
    )


def test_the_runtime_observers_requests_are_never_faulted() -> None:
    # Given throttling on every request, When the tally reads with its own user agent, Then it passes
    layer, _ = _layer(dynamodb_throttle=1.0)
    assert _call(layer, "DynamoDB_20120810.Scan", {}, agent="Boto3 relay-local-observer")[0] == 200


def test_faults_are_read_from_the_environment_and_refused_when_malformed() -> None:
    # Given RELAY_LOCAL_FAULT_ variables, When read, Then they become the faults, other names ignored
    faults = LocalFaults.from_environ(
        {"RELAY_LOCAL_FAULT_REDELIVER": "0.1", "RELAY_LOCAL_FAULT_SEED": "7", "X": "1"}
    )
    assert (faults.redeliver, faults.seed, faults.at_endpoint) == (0.1, 7, False)
    # And a value that is no probability is refused, naming the variable
    for text in ("often", "1.5"):
        with pytest.raises(ValueError, match="RELAY_LOCAL_FAULT_DYNAMODB_THROTTLE"):
            LocalFaults.from_environ({"RELAY_LOCAL_FAULT_DYNAMODB_THROTTLE": text})


def test_schedule_rates_and_the_event_eventbridge_sends() -> None:
    # Given rate expressions, Then their periods; a cron() is not followed
    assert [
        rate_seconds(e) for e in ("rate(1 minute)", "rate(5 minutes)", "rate(2 hours)", "cron(0 * * * ? *)")
    ] == [
        60,
        300,
        7200,
        None,
    ]
    # And a scheduled run gets a Scheduled Event, or the rule's constant Input
    assert event_for(Schedule("Every5", "rate(5 minutes)", 300))["detail-type"] == "Scheduled Event"
    assert event_for(Schedule("Every5", "rate(5 minutes)", 300, input='{"dryRun": true}')) == {"dryRun": True}


def test_a_function_with_a_schedule_event_is_found_and_invoked_periodically() -> None:
    # Given a template where one function has a rate() schedule, one a cron(), one a disabled schedule
    def function(events: dict[str, Any]) -> dict[str, Any]:
        return {"Type": "AWS::Serverless::Function", "Properties": {"Handler": "m.h", "Events": events}}

    template = {
        "Resources": {
            "ReconcileFunction": function(
                {"Every": {"Type": "Schedule", "Properties": {"Schedule": "rate(15 minutes)"}}}
            ),
            "CronFunction": function(
                {"Nightly": {"Type": "ScheduleV2", "Properties": {"ScheduleExpression": "cron(0 2 * * ? *)"}}}
            ),
            "OffFunction": function(
                {"Off": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)", "Enabled": False}}}
            ),
            "Queue": {"Type": "AWS::SQS::Queue"},
        }
    }
    stack = LocalStack("", "ap-south-1", template, {}, {}, {})
    # When its schedules are read
    assert stack.function_ids() == ["ReconcileFunction", "CronFunction", "OffFunction"]
    (schedule,) = stack.function_schedules("ReconcileFunction")
    # Then the rate one is found, the cron one is found but has no period, the disabled one is not
    assert (schedule.name, schedule.period_seconds) == ("Every", 900)
    assert [s.period_seconds for s in stack.function_schedules("CronFunction")] == [None]
    assert stack.function_schedules("OffFunction") == []

    # When it runs with a short period, Then the function is invoked again and again with a Scheduled Event
    class Recording:
        name = "ReconcileFunction"
        timeout_seconds = 60.0

        def __init__(self) -> None:
            self.events: list[dict[str, Any]] = []
            self.twice = threading.Event()

        def new_context(self) -> Any:
            raise NotImplementedError

        def invoke(self, event: dict[str, Any]) -> Any:
            self.events.append(event)
            if len(self.events) >= 2:
                self.twice.set()

    recording = Recording()
    schedules = LocalSchedules([(recording, schedule)], period_override=0.05)
    schedules.start()
    try:
        assert recording.twice.wait(30)
    finally:
        schedules.stop()
    assert {event["detail-type"] for event in recording.events} == {"Scheduled Event"}
