"""template.yaml keeps the rules Lambda, SQS and the relay depend on (read from the file itself)."""

from typing import Any

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


def test_functions_have_least_privilege() -> None:
    for function in ("IngestFunction", "DispatchFunction"):
        for action, resource in grants(function):
            assert "*" not in action, f"{function} has a wildcard action {action}"
            assert resource != "*", f"{function} grants {action} on every resource"
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
    # message only returns once its claim has run out (lease < visibility timeout): dropping
    # a copy that meets a live lease can then never lose an invoice.
    from relay.settings import DispatchSettings

    lease = DispatchSettings.model_fields["lease_seconds"].default
    assert props("DispatchFunction")["Timeout"] < lease < props("InvoiceQueue")["VisibilityTimeout"]


def test_every_function_log_group_has_a_retention() -> None:
    for function in ("IngestFunction", "DispatchFunction"):
        group = props(f"{function}LogGroup")
        assert group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
