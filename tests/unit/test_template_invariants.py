"""template.yaml keeps the rules Lambda, SQS and the relay depend on (read from the file itself)."""

import json
import re
from typing import Any

import pytest

from relay_local.stack import load_template

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]


def props(logical_id: str) -> dict[str, Any]:
    return RESOURCES[logical_id]["Properties"]  # type: ignore[no-any-return]


def sqs_event() -> dict[str, Any]:
    (event,) = [e["Properties"] for e in props("DispatchFunction")["Events"].values() if e["Type"] == "SQS"]
    return event  # type: ignore[no-any-return]


def test_functions_run_python313_on_arm64_with_active_tracing() -> None:
    function_globals = TEMPLATE["Globals"]["Function"]
    assert (function_globals["Runtime"], function_globals["Architectures"], function_globals["Tracing"]) == (
        "python3.13",
        ["arm64"],
        "Active",
    )


def test_visibility_timeout_covers_six_dispatcher_timeouts_plus_the_largest_window() -> None:
    largest_window = PARAMETERS["DispatchBatchingWindowSeconds"]["MaxValue"]
    assert (
        props("InvoiceQueue")["VisibilityTimeout"]
        >= 6 * props("DispatchFunction")["Timeout"] + largest_window
    )


def test_dead_letter_queue_outlives_the_queue_and_redrive_is_patient() -> None:
    queue = props("InvoiceQueue")
    assert props("InvoiceDeadLetterQueue")["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["InvoiceDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert PARAMETERS["MaxReceiveCount"]["MinValue"] >= 5


def test_event_source_reports_partial_failures_with_tunable_batching() -> None:
    event = sqs_event()
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["BatchSize"] == {"Ref": "DispatchBatchSize"}
    assert event["MaximumBatchingWindowInSeconds"] == {"Ref": "DispatchBatchingWindowSeconds"}
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "DispatchMaxConcurrency"}
    # A batch size above 10 needs a window of at least 1 s: the window can never be 0.
    assert PARAMETERS["DispatchBatchSize"]["MaxValue"] > 10
    assert PARAMETERS["DispatchBatchingWindowSeconds"]["MinValue"] >= 1


def test_ledger_table_is_on_demand_with_ttl_backups_and_encryption() -> None:
    table = props("InvoiceLedgerTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True


def grants(function: str) -> set[tuple[str, str]]:
    """(action, resource) pairs the function's policies allow."""
    pairs = set()
    for policy in props(function)["Policies"]:
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            pairs |= {(action, str(resource)) for action in actions for resource in resources}
    return pairs


METRIC_READS = frozenset({"cloudwatch:GetMetricData"})
"""Read-only actions IAM grants only on "*"."""


def test_functions_have_least_privilege() -> None:
    for function in ("IngestFunction", "DispatchFunction", "ReconcileFunction"):
        for action, resource in grants(function):
            assert "*" not in action, f"{function} has a wildcard action {action}"
            # GetMetricData has no resource-level permission: IAM accepts only "*" for it.
            assert resource != "*" or action in METRIC_READS, f"{function} grants {action} on every resource"
    assert {action for action, _ in grants("IngestFunction")} == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
    }
    assert {action for action, _ in grants("DispatchFunction")} == {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
    }
    # The reconciler lists through the work index only (Query, never Scan), reads the queue's
    # age from CloudWatch and reads no secret.
    assert grants("ReconcileFunction") == {
        ("dynamodb:Query", str({"Fn::Sub": "${InvoiceLedgerTable.Arn}/index/ByDue"})),
        ("cloudwatch:GetMetricData", "*"),
        ("dynamodb:GetItem", str({"Fn::GetAtt": ["InvoiceLedgerTable", "Arn"]})),
        ("dynamodb:UpdateItem", str({"Fn::GetAtt": ["InvoiceLedgerTable", "Arn"]})),
        ("sqs:SendMessage", str({"Fn::GetAtt": ["InvoiceQueue", "Arn"]})),
    }
    # Ingest never reads the Fynd credentials; the dispatcher never reads the webhook secret.
    assert not any("Fynd" in resource for _, resource in grants("IngestFunction"))
    assert not any("WebhookSigningSecret" in resource for _, resource in grants("DispatchFunction"))


def test_no_secret_value_lives_in_the_template() -> None:
    for logical_id in ("FyndCredentialsSecret", "WebhookSigningSecret"):
        assert "GenerateSecretString" in props(logical_id)
        assert "SecretString" not in props(logical_id)
    assert props("FyndLocationCredentialsSecret")["SecretString"] == "{}"


def test_lease_outlives_the_dispatcher_and_ends_before_its_message_returns() -> None:
    # A live dispatcher never loses its claim (lease > timeout), and a crashed dispatcher's
    # message only returns once its claim has run out (lease < visibility timeout), so the
    # retry can claim it rather than wait behind a lease nobody holds.
    from relay.settings import DispatchSettings

    lease = DispatchSettings.model_fields["lease_seconds"].default
    assert props("DispatchFunction")["Timeout"] < lease < props("InvoiceQueue")["VisibilityTimeout"]


def test_every_function_log_group_has_a_retention() -> None:
    functions = [name for name, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"]
    assert sorted(functions) == [
        "DispatchFunction",
        "IngestFunction",
        "ReconcileFunction",
        "RecoverFunction",
        "WritebackFeedFunction",
        "WritebackFunction",
    ]
    for function in functions:
        group = props(f"{function}LogGroup")
        assert group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


# ---- the reconciler (breach 11, part 2) ----


BY_DUE = {
    "IndexName": "ByDue",
    "KeySchema": [
        {"AttributeName": "workShard", "KeyType": "HASH"},
        {"AttributeName": "dueAt", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "ALL"},
}
BY_STATUS = {
    "IndexName": "ByStatus",
    "KeySchema": [
        {"AttributeName": "statusKey", "KeyType": "HASH"},
        {"AttributeName": "updatedAt", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "ALL"},
}


def test_the_ledger_has_the_sharded_work_index_and_the_legacy_index_only_while_migrating() -> None:
    from relay.adapters.ledger import BY_STATUS_INDEX
    from relay.adapters.work_index import WORK_INDEX
    from relay_local.stack import table_properties

    # Given the ledger table, Then it has the work index alone: (workShard S, dueAt N)
    table = table_properties("InvoiceLedgerTable", {"LedgerWarmWriteUnitsPerSecond": "0"})
    assert table["GlobalSecondaryIndexes"] == [BY_DUE]
    assert table["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "workShard", "AttributeType": "S"},
        {"AttributeName": "dueAt", "AttributeType": "N"},
    ]
    # And while a deployed stack moves to it (LegacyByStatusIndex=true), ByStatus is kept beside it:
    # one GSI added per update, as CloudFormation allows
    legacy = table_properties(
        "InvoiceLedgerTable", {"LegacyByStatusIndex": "true", "LedgerWarmWriteUnitsPerSecond": "0"}
    )
    assert legacy["GlobalSecondaryIndexes"] == [BY_DUE, BY_STATUS]
    assert {"AttributeName": "statusKey", "AttributeType": "S"} in legacy["AttributeDefinitions"]
    assert (WORK_INDEX, BY_STATUS_INDEX) == ("ByDue", "ByStatus")
    # And at the defaults it is pre-warmed with the table: an index warms apart, and back-pressures
    # the table
    warm = table_properties("InvoiceLedgerTable")
    assert warm["GlobalSecondaryIndexes"] == [
        {**BY_DUE, "WarmThroughput": {"WriteUnitsPerSecond": {"Ref": "LedgerWarmWriteUnitsPerSecond"}}}
    ]
    # And every function gets the shard count, which `relay` reads from the stack's outputs
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["WORK_INDEX_SHARDS"] == {"Ref": "WorkIndexShards"}
    assert TEMPLATE["Outputs"]["WorkIndexShards"]["Value"] == {"Ref": "WorkIndexShards"}


def test_the_reconciler_runs_on_a_schedule_like_the_other_functions() -> None:
    function = props("ReconcileFunction")
    assert function["Handler"] == "relay.handlers.reconcile.lambda_handler"
    # python3.13 on arm64, from Globals like the others
    assert {"Runtime", "Architectures"}.isdisjoint(function)
    (event,) = function["Events"].values()
    assert (event["Type"], event["Properties"]["Schedule"]) == ("Schedule", "rate(5 minutes)")
    assert function["Environment"]["Variables"]["RECONCILE_AFTER_MINUTES"] == {"Ref": "ReconcileAfterMinutes"}


def test_the_reconcile_window_outlasts_the_visibility_timeout_and_the_lease() -> None:
    # A message in flight (invisible for the visibility timeout) or under a live lease is not
    # lost: the window must be longer than both, for the smallest value the parameter allows.
    from relay.settings import DispatchSettings

    window = PARAMETERS["ReconcileAfterMinutes"]
    lease = DispatchSettings.model_fields["lease_seconds"].default
    smallest = window["MinValue"] * 60
    assert smallest > props("InvoiceQueue")["VisibilityTimeout"]
    assert smallest > lease
    assert window["MinValue"] <= window["Default"] == 15
    # And a run ends well before the next one starts
    assert props("ReconcileFunction")["Timeout"] < 5 * 60


# ---- template hardening (breach 14) ----


def sam_translated() -> dict[str, Any]:
    """The template as CloudFormation gets it after SAM's transform (offline)."""
    import os

    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    from relay_local.stack import TEMPLATE as TEMPLATE_PATH

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    document = yaml_parse(TEMPLATE_PATH.read_text())
    document["Globals"]["Function"]["CodeUri"] = "s3://bucket/key"  # what `sam package` puts there
    os.environ.setdefault("AWS_DEFAULT_REGION", "ap-south-1")
    return transform(document, {}, NoManagedPolicies())  # type: ignore[no-any-return]


def test_the_api_stage_is_throttled_and_logged() -> None:
    # Given the HTTP API's stage as SAM creates it
    resources = sam_translated()["Resources"]
    (stage,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    # Then every route is throttled by the two parameters
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "IngestReservedConcurrency"},
    }
    # And access logs go to a log group with a retention, one JSON object per request
    assert stage["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}
    assert props("HttpApiAccessLogGroup")["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    fields = json.loads(stage["AccessLogSettings"]["Format"])
    assert {"requestId", "status", "routeKey", "ip"} <= set(fields)
    # And nothing that carries a signature or an invoice is logged
    assert not any(word in stage["AccessLogSettings"]["Format"] for word in ("header", "body", "querystring"))


def test_the_api_burst_is_ingests_reserved_concurrency_whatever_a_deployer_sets() -> None:
    # A flood of webhooks stops at ingest's reserved concurrency, so the dispatcher and the
    # reconciler keep the rest of the account's; and the API's burst is that same number, so the
    # API answers 429 before Lambda throttles ingest (a 5xx). CloudFormation rules cannot compare
    # numbers, so no separate burst parameter exists that could be set above it.
    assert props("IngestFunction")["ReservedConcurrentExecutions"] == {"Ref": "IngestReservedConcurrency"}
    assert "ApiThrottlingBurstLimit" not in PARAMETERS
    settings = TEMPLATE["Globals"]["HttpApi"]["DefaultRouteSettings"]
    assert settings["ThrottlingBurstLimit"] == {"Ref": "IngestReservedConcurrency"}
    reserved = PARAMETERS["IngestReservedConcurrency"]
    assert reserved["MinValue"] >= 1
    # The account keeps 100 unreserved executions out of its default 1,000
    assert reserved["MaxValue"] <= 900


def test_sale_day_defaults_take_300_one_invoice_webhooks_a_second_with_bursts_to_600() -> None:
    # ERPNext v14/v15 sends one invoice per webhook and gives up after 3 tries within about 5 s:
    # a 429 at the edge can lose the invoice, so the defaults must let a sale day's peak through
    rate = PARAMETERS["ApiThrottlingRateLimit"]
    assert rate["Default"] >= 600
    assert rate["MaxValue"] <= 10_000  # the account's default API Gateway throttle
    # And the reserved concurrency serves that rate while an ingest takes up to half a second
    assert PARAMETERS["IngestReservedConcurrency"]["Default"] >= rate["Default"] * 0.5


def test_the_ledger_is_pre_warmed_for_a_sale_day_by_default() -> None:
    # A new on-demand table absorbs about 4,000 write units a second at first. ERPNext's sale day
    # peaked at 3,825 in make scale (docs/scale.md), and ERPNext gives up on 503s, so the default
    # pre-warms with room; 0 (no one-time charge) remains a seller's choice
    warm = props("InvoiceLedgerTable")["WarmThroughput"]
    assert warm == {
        "Fn::If": [
            "WarmsTheLedger",
            {"WriteUnitsPerSecond": {"Ref": "LedgerWarmWriteUnitsPerSecond"}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    warm_units = PARAMETERS["LedgerWarmWriteUnitsPerSecond"]
    new_table_write_units = 4_000  # DynamoDB's on-demand-capacity-mode.html (docs/scale.md)
    assert warm_units["Default"] >= 2 * new_table_write_units
    assert warm_units["MinValue"] == 0
    assert TEMPLATE["Conditions"]["WarmsTheLedger"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "LedgerWarmWriteUnitsPerSecond"}, 0]}]
    }


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://fyndkonnect.konnect.uat.fyndx1.de", True),
        ("https://fynd.example.com:8443/base/path", True),
        ("http://fyndkonnect.konnect.uat.fyndx1.de", False),
        ("HTTP://fynd.example.com", False),
        ("https://", False),
        ("ftp://fynd.example.com", False),
        ("https://fynd.example.com/has space", False),
    ],
)
def test_breach_14_fynd_base_url_must_be_https(url: str, allowed: bool) -> None:
    # The token request carries the Fynd password: CloudFormation must refuse a plain-http URL
    parameter = PARAMETERS["FyndBaseUrl"]
    assert (re.fullmatch(parameter["AllowedPattern"], url) is not None) is allowed
    assert "https://" in parameter["ConstraintDescription"]


def test_breach_14_the_queues_message_size_is_explicit_and_fits_the_largest_invoice() -> None:
    largest_body = PARAMETERS["MaxBodyBytes"]["MaxValue"]
    for queue in ("InvoiceQueue", "InvoiceDeadLetterQueue"):
        # Room for the envelope around the largest invoice ingest accepts
        assert props(queue)["MaximumMessageSize"] >= largest_body + 4096, queue
        assert props(queue)["MaximumMessageSize"] <= 1_048_576, queue
    # The dead-letter queue takes whatever the queue holds
    assert (
        props("InvoiceDeadLetterQueue")["MaximumMessageSize"] >= props("InvoiceQueue")["MaximumMessageSize"]
    )


def test_breach_14_secrets_and_the_dead_letter_queue_survive_stack_deletion() -> None:
    kept = {
        name
        for name, resource in RESOURCES.items()
        if resource.get("DeletionPolicy") == "Retain" and resource.get("UpdateReplacePolicy") == "Retain"
    }
    secrets = {name for name, r in RESOURCES.items() if r["Type"] == "AWS::SecretsManager::Secret"}
    assert secrets == {
        "FyndCredentialsSecret",
        "FyndLocationCredentialsSecret",
        "WebhookSigningSecret",
        "ErpNextCredentialsSecret",
        "CallbackSigningSecret",
    }
    assert secrets | {"InvoiceDeadLetterQueue", "InvoiceLedgerTable", "WritebackDeadLetterQueue"} <= kept
