"""The alarms, their topic and the dashboard in template.yaml, against what the relay emits and
what docs/runbook.md says: every alarm watches a metric the relay publishes, under the
dimensions Powertools gives it, notifies the one topic, and has its runbook section."""

import json
import re
from typing import Any

import pytest

from relay.domain.reconcile import DEAD_LETTER_RETENTION_SECONDS
from relay.observability import count, metrics
from relay_local.stack import TEMPLATE, load_template

RUNBOOK = TEMPLATE.parent / "docs" / "runbook.md"
SRC = TEMPLATE.parent / "src" / "functions" / "relay"
TEMPLATE_DATA = load_template()
RESOURCES: dict[str, Any] = TEMPLATE_DATA["Resources"]
SERVICE = TEMPLATE_DATA["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
RELAY_NAMESPACE = {"Ref": "MetricsNamespace"}
TOPIC = [{"Ref": "AlarmTopic"}]

# section (the alarm name after "<stack>-") -> what it watches
ALARMS: dict[str, dict[str, Any]] = {
    "dead-letter-queue-not-empty": {
        "namespace": "AWS/SQS",
        "metric": "ApproximateNumberOfMessagesVisible",
        "dimensions": {"QueueName": {"Fn::GetAtt": ["InvoiceDeadLetterQueue", "QueueName"]}},
        "statistic": "Maximum",
        "threshold": 0,
        "missing": "ignore",
    },
    "dead-letter-expiring": {
        "namespace": "AWS/SQS",
        "metric": "ApproximateAgeOfOldestMessage",
        "dimensions": {"QueueName": {"Fn::GetAtt": ["InvoiceDeadLetterQueue", "QueueName"]}},
        "statistic": "Maximum",
        "threshold": 604800,
        "missing": "ignore",
    },
    "oldest-invoice-waiting-too-long": {
        "namespace": "AWS/SQS",
        "metric": "ApproximateAgeOfOldestMessage",
        "dimensions": {"QueueName": {"Fn::GetAtt": ["InvoiceQueue", "QueueName"]}},
        "statistic": "Maximum",
        "threshold": {"Ref": "QueueAgeAlarmSeconds"},
        # SQS may publish nothing for an idle queue: a gap must neither raise nor clear it (breach 14)
        "missing": "ignore",
    },
    "dispatcher-errors": {
        "namespace": "AWS/Lambda",
        "metric": "Errors",
        "dimensions": {"FunctionName": {"Ref": "DispatchFunction"}},
        "statistic": "Sum",
        "threshold": 0,
        "missing": "notBreaching",
    },
    "dispatcher-throttled": {
        "namespace": "AWS/Lambda",
        "metric": "Throttles",
        "dimensions": {"FunctionName": {"Ref": "DispatchFunction"}},
        "statistic": "Sum",
        "threshold": 0,
        "missing": "notBreaching",
    },
    "ingest-errors": {
        "namespace": "AWS/Lambda",
        "metric": "Errors",
        "dimensions": {"FunctionName": {"Ref": "IngestFunction"}},
        "statistic": "Sum",
        "threshold": 0,
        "missing": "notBreaching",
    },
    "ingest-5xx": {
        "namespace": "AWS/ApiGateway",
        "metric": "5xx",
        "dimensions": {"ApiId": {"Ref": "ServerlessHttpApi"}},
        "statistic": "Sum",
        "threshold": 0,
        "missing": "notBreaching",
    },
    "api-throttled": {
        "namespace": RELAY_NAMESPACE,
        "metric": "WebhooksThrottled",
        "dimensions": {},
        "statistic": "Sum",
        "threshold": 0,
        "missing": "notBreaching",
    },
    "already-invoiced-at-fynd": {
        "namespace": RELAY_NAMESPACE,
        "metric": "AlreadyInvoiced",
        "dimensions": {"service": SERVICE},
        "statistic": "Sum",
        "threshold": 0,
        "missing": "notBreaching",
    },
    "fynd-token-failures": {
        "namespace": RELAY_NAMESPACE,
        "metric": "TokenFailures",
        "dimensions": {"service": SERVICE},
        "statistic": "Sum",
        "threshold": 0,
        "missing": "notBreaching",
    },
    "erp-write-back-dead-lettered": {
        "namespace": "AWS/SQS",
        "metric": "ApproximateNumberOfMessagesVisible",
        "dimensions": {"QueueName": {"Fn::GetAtt": ["WritebackDeadLetterQueue", "QueueName"]}},
        "statistic": "Maximum",
        "threshold": 0,
        "missing": "ignore",
    },
    "erp-write-back-feed-stuck": {
        "namespace": "AWS/Lambda",
        "metric": "IteratorAge",
        "dimensions": {"FunctionName": {"Ref": "WritebackFeedFunction"}},
        "statistic": "Maximum",
        # An hour, in milliseconds: the stream keeps a change 24 h
        "threshold": 3_600_000,
        "missing": "notBreaching",
    },
    "erp-recovery-failing": {
        "namespace": "AWS/Lambda",
        "metric": "Errors",
        "dimensions": {"FunctionName": {"Ref": "RecoverFunction"}},
        "statistic": "Sum",
        "threshold": 0,
        "missing": "notBreaching",
    },
}
REJECTIONS = "invoices-rejected"
REJECTED_CODES = {"IN401", "IN400", "IN422", "IN403_DEADLINE"}
RECONCILED = "invoices-reconciled"
MATH_ALARMS = [REJECTIONS, RECONCILED]
"""Alarms on a sum of several series (metric math) rather than one metric."""


def alarms() -> dict[str, dict[str, Any]]:
    """Alarm properties by section name, read from AlarmName = !Sub "${AWS::StackName}-<section>"."""
    found: dict[str, dict[str, Any]] = {}
    for resource in RESOURCES.values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        name = resource["Properties"]["AlarmName"]["Fn::Sub"]
        assert name.startswith("${AWS::StackName}-"), name
        found[name.removeprefix("${AWS::StackName}-")] = resource["Properties"]
    return found


def description(properties: dict[str, Any]) -> str:
    text = properties["AlarmDescription"]
    return str(text["Fn::Sub"] if isinstance(text, dict) else text)


def runbook_sections() -> list[str]:
    return re.findall(r"^## (.+?)\s*$", RUNBOOK.read_text(), flags=re.MULTILINE)


def emitted_dimensions(name: str, capsys: pytest.CaptureFixture[str], **dimensions: str) -> dict[str, str]:
    """The dimensions Powertools publishes `name` under when the relay counts it so."""
    capsys.readouterr()
    count(name, **dimensions)
    metrics.flush_metrics()
    (line,) = [line for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    document = json.loads(line)
    ((dimension_set,),) = [directive["Dimensions"] for directive in document["_aws"]["CloudWatchMetrics"]]
    return {dimension: document[dimension] for dimension in dimension_set}


def relay_metric_names() -> set[str]:
    """Every metric the relay's code counts or measures."""
    code = "\n".join(path.read_text() for path in SRC.rglob("*.py"))
    return set(re.findall(r'(?:count|measure)\(\s*"(\w+)"', code))


def test_the_template_has_exactly_the_alarms_of_the_runbook() -> None:
    # Given the alarms of the template and the sections of the runbook
    # Then each alarm has one section named after it, and each section one alarm
    assert sorted(alarms()) == sorted([*ALARMS, *MATH_ALARMS])
    assert sorted(runbook_sections()) == sorted(alarms())


@pytest.mark.parametrize("section", [*ALARMS, *MATH_ALARMS])
def test_each_alarm_notifies_the_one_topic_and_points_at_its_runbook_section(section: str) -> None:
    properties = alarms()[section]
    assert properties["AlarmActions"] == TOPIC
    assert properties["OKActions"] == TOPIC
    assert f"docs/runbook.md#{section}" in description(properties)
    # One datapoint is enough: each of these means orders are waiting or lost now
    assert properties["EvaluationPeriods"] == 1
    assert properties["ComparisonOperator"] == "GreaterThanThreshold"


@pytest.mark.parametrize("section", ALARMS)
def test_each_alarm_watches_its_metric(section: str) -> None:
    expected, properties = ALARMS[section], alarms()[section]
    assert properties["Namespace"] == expected["namespace"]
    assert properties["MetricName"] == expected["metric"]
    assert {d["Name"]: d["Value"] for d in properties.get("Dimensions", [])} == expected["dimensions"]
    assert properties["Statistic"] == expected["statistic"]
    assert properties["Threshold"] == expected["threshold"]
    assert properties["TreatMissingData"] == expected["missing"]
    assert properties["Period"] == 60


def test_the_rejection_alarm_sums_every_terminal_code_and_conflicts() -> None:
    properties = alarms()[REJECTIONS]
    queries = {query["Id"]: query for query in properties["Metrics"]}
    (returned,) = [query for query in queries.values() if query.get("ReturnData")]
    watched = {
        query_id: query["MetricStat"]["Metric"]
        for query_id, query in queries.items()
        if "MetricStat" in query
    }
    # Every watched series is in the expression, with gaps as zero
    assert sorted(re.findall(r"FILL\((\w+), 0\)", returned["Expression"])) == sorted(watched)
    assert all(query["MetricStat"]["Stat"] == "Sum" for query in queries.values() if "MetricStat" in query)
    rejected = {
        next(d["Value"] for d in metric["Dimensions"] if d["Name"] == "code")
        for metric in watched.values()
        if metric["MetricName"] == "InvoicesRejected"
    }
    assert rejected == REJECTED_CODES
    assert [metric["MetricName"] for metric in watched.values()].count("Conflicts") == 1
    assert all(metric["Namespace"] == RELAY_NAMESPACE for metric in watched.values())
    assert (properties["Threshold"], properties["TreatMissingData"]) == (0, "notBreaching")


def log_metrics() -> dict[str, dict[str, Any]]:
    """The metrics CloudWatch Logs counts from a log group (metric filters), by name."""
    return {
        transformation["MetricName"]: {"filter": resource["Properties"], **transformation}
        for resource in RESOURCES.values()
        if resource["Type"] == "AWS::Logs::MetricFilter"
        for transformation in resource["Properties"]["MetricTransformations"]
    }


def test_the_throttle_alarm_counts_the_api_access_logs_429_answers_alone() -> None:
    # Given the metric the api-throttled alarm watches
    metric = log_metrics()["WebhooksThrottled"]
    # Then CloudWatch Logs counts it from the API's access log, one per 429 answer: HTTP APIs
    # publish only one 4xx count, which 401s and 422s (the ERP's own mistakes) would drown
    assert metric["filter"]["LogGroupName"] == {"Ref": "HttpApiAccessLogGroup"}
    assert metric["filter"]["FilterPattern"] == '{ $.status = "429" }'
    assert (metric["MetricNamespace"], metric["MetricValue"]) == (RELAY_NAMESPACE, "1")
    # And the access log writes the field the filter reads, as the string it compares
    log_format = TEMPLATE_DATA["Globals"]["HttpApi"]["AccessLogSettings"]["Format"]
    assert '"status":"$context.status"' in log_format.replace(" ", "")


def test_relay_metric_alarms_use_the_dimensions_powertools_emits(capsys: pytest.CaptureFixture[str]) -> None:
    # Given every relay metric an alarm watches, with the dimensions it is watched under (those
    # counted from logs by a metric filter are not the code's)
    watched = [
        (properties["MetricName"], {d["Name"]: d["Value"] for d in properties["Dimensions"]})
        for properties in alarms().values()
        if properties.get("Namespace") == RELAY_NAMESPACE and properties["MetricName"] not in log_metrics()
    ] + [
        (
            query["MetricStat"]["Metric"]["MetricName"],
            {d["Name"]: d["Value"] for d in query["MetricStat"]["Metric"]["Dimensions"]},
        )
        for section in MATH_ALARMS
        for query in alarms()[section]["Metrics"]
        if "MetricStat" in query and query["MetricStat"]["Metric"]["Namespace"] == RELAY_NAMESPACE
    ]
    assert len(watched) == 11
    for name, dimensions in watched:
        # When the relay counts it as its code does
        extra = {key: value for key, value in dimensions.items() if key != "service"}
        # Then Powertools publishes it under exactly those dimensions, and the relay does count it
        assert emitted_dimensions(name, capsys, **extra) == dimensions, name
        assert name in relay_metric_names(), name


def math_alarm_series(section: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """The alarm's returned expression, and the series it reads by query id."""
    queries = {query["Id"]: query for query in alarms()[section]["Metrics"]}
    (returned,) = [query for query in queries.values() if query.get("ReturnData")]
    watched = {
        query_id: query["MetricStat"]["Metric"]
        for query_id, query in queries.items()
        if "MetricStat" in query
    }
    return returned["Expression"], watched


def test_the_reconcile_alarm_sums_every_requeue_every_failure_and_the_reconcilers_errors() -> None:
    from relay.domain.reconcile import RECONCILED_STATUSES

    # Given the invoices-reconciled alarm
    properties = alarms()[RECONCILED]
    expression, watched = math_alarm_series(RECONCILED)
    # Then every series it reads is in its sum, with gaps as zero
    assert sorted(re.findall(r"FILL\((\w+), 0\)", expression)) == sorted(watched)
    # And it reads Reconciled for each status the reconciler visits, ReconcileFailed, and the
    # function's own errors (a reconciler that fails every run heals nothing)
    statuses = {
        next(d["Value"] for d in metric["Dimensions"] if d["Name"] == "status")
        for metric in watched.values()
        if metric["MetricName"] == "Reconciled"
    }
    assert statuses == {str(status) for status in RECONCILED_STATUSES}
    assert [metric["MetricName"] for metric in watched.values()].count("ReconcileFailed") == 1
    (errors,) = [metric for metric in watched.values() if metric["Namespace"] == "AWS/Lambda"]
    assert errors["MetricName"] == "Errors"
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ReconcileFunction"}}]
    assert (properties["Threshold"], properties["TreatMissingData"]) == (0, "notBreaching")


def test_breach_14_the_queue_age_alarm_keeps_its_state_through_gaps() -> None:
    # SQS may publish nothing for a queue at rest: a gap must neither raise the alarm nor
    # clear one that an old invoice raised
    assert alarms()["oldest-invoice-waiting-too-long"]["TreatMissingData"] == "ignore"


BOUNDED_DIMENSIONS = {"service", "reason", "code", "stage", "status", "kind", "target"}
"""Dimension names the relay's metrics may carry: each takes values from a closed set."""


def test_no_metric_dimension_takes_unbounded_values() -> None:
    # Given every dimension the relay's code counts a metric under
    code = "\n".join(path.read_text() for path in SRC.rglob("*.py"))
    used = set(re.findall(r'count\(\s*"\w+"[^)]*?,\s*(\w+)=', code))
    # Then each is one of the closed sets (reasons, Fynd codes mapped to known ones or "other",
    # ledger states, exception kinds), never a key, an id or a message
    assert used <= BOUNDED_DIMENSIONS, used - BOUNDED_DIMENSIONS
    assert {"reason", "code"} <= used  # the scan finds what it must
    # And every alarm watches fixed dimension values: a resource, a parameter, or a constant
    for section, properties in alarms().items():
        series = (
            [properties]
            if "MetricName" in properties
            else [query["MetricStat"]["Metric"] for query in properties["Metrics"] if "MetricStat" in query]
        )
        for metric in series:
            for dimension in metric.get("Dimensions", []):
                assert dimension["Name"] in BOUNDED_DIMENSIONS | {"QueueName", "FunctionName", "ApiId"}, (
                    section
                )
                value = dimension["Value"]
                assert isinstance(value, str) or set(value) <= {"Ref", "Fn::GetAtt"}, section


def test_the_topic_is_encrypted_with_a_key_cloudwatch_may_use_for_this_stacks_alarms_only() -> None:
    topic, key = RESOURCES["AlarmTopic"]["Properties"], RESOURCES["AlarmTopicKey"]["Properties"]
    # alias/aws/sns would silently drop every notification: CloudWatch cannot use that key
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlarmTopicKey", "Arn"]}
    assert key["EnableKeyRotation"] is True
    alarm_arns = "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:${AWS::StackName}-*"
    (for_cloudwatch,) = [
        statement for statement in key["KeyPolicy"]["Statement"] if statement["Principal"].get("Service")
    ]
    assert for_cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert sorted(for_cloudwatch["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert for_cloudwatch["Condition"]["ArnLike"]["aws:SourceArn"] == {"Fn::Sub": alarm_arns}
    (publish,) = RESOURCES["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (publish["Effect"], publish["Action"], publish["Principal"]) == (
        "Allow",
        "sns:Publish",
        {"Service": "cloudwatch.amazonaws.com"},
    )
    assert publish["Condition"]["ArnLike"]["aws:SourceArn"] == {"Fn::Sub": alarm_arns}
    # And every alarm's name falls under that pattern
    assert all(
        properties["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-")
        for properties in alarms().values()
    )


def test_the_email_subscription_exists_only_when_an_address_is_given() -> None:
    subscriptions = [r for r in RESOURCES.values() if r["Type"] == "AWS::SNS::Subscription"]
    assert len(subscriptions) == 1
    (subscription,) = subscriptions
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "AlarmTopic"}
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert TEMPLATE_DATA["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }
    assert TEMPLATE_DATA["Parameters"]["AlarmEmail"]["Default"] == ""


def dashboard() -> dict[str, Any]:
    body = RESOURCES["RelayDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    known = {*RESOURCES, *TEMPLATE_DATA["Parameters"], "AWS::Region", "AWS::StackName", "ServerlessHttpApi"}
    assert {name.split(".")[0] for name in names} <= known
    return json.loads(re.sub(r"\$\{[^}]+\}", "1", body))  # type: ignore[no-any-return]


def test_the_dashboard_shows_traffic_outcomes_queues_fynd_and_errors() -> None:
    widgets = dashboard()["widgets"]
    shown = json.dumps(widgets)
    for metric in [
        "InvoicesReceived",
        "InvoicesQueued",
        'MetricName=\\"InvoicesRejected\\"',
        'MetricName=\\"Retries\\"',
        'MetricName=\\"DeadLettered\\"',
        "InvoicesInvoiced",
        "AlreadyInvoiced",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "FyndCallLatency",
        "OrdersPerCall",
        "RateSlotsMissed",
        "RateLimiterUnavailable",
        "ReadAfterLostAnswer",
        "SendStampFailed",
        "Errors",
        "Throttles",
        "5xx",
    ]:
        assert metric in shown, metric
    (alarm_widget,) = [widget for widget in widgets if widget["type"] == "alarm"]
    assert len(alarm_widget["properties"]["alarms"]) == len(alarms())


def test_new_resources_get_no_role_or_policy() -> None:
    # Alarms, dashboard, topic and key act through service principals; nothing new runs code.
    roles = [name for name, r in RESOURCES.items() if r["Type"] in ("AWS::IAM::Role", "AWS::IAM::Policy")]
    assert roles == []


def test_the_dead_letter_age_alarm_leaves_a_week_before_the_queue_drops_a_message() -> None:
    # Given the dead-letter queue's retention (counted from a message's first enqueue) and the age alarm
    retention = RESOURCES["InvoiceDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]
    threshold = alarms()["dead-letter-expiring"]["Threshold"]
    # Then the reconciler's idea of the retention is the template's, and the alarm leaves a week to act
    assert retention == DEAD_LETTER_RETENTION_SECONDS
    assert retention - threshold >= 7 * 86_400
