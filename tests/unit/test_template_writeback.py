"""template.yaml's write-back: the stream and its filter, the FIFO queue, least privilege, the
secrets. The filter is evaluated with the local runtime's matcher (relay_local.event_filter)
against the stream records the ledger's writes make (the same records moto produces, checked
in tests/integration/test_writeback_stream.py)."""

import json
from typing import Any

import pytest

from relay_local.event_filter import matches_any
from relay_local.stack import load_template

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
TABLE_ARN = str({"Fn::GetAtt": ["InvoiceLedgerTable", "Arn"]})
QUEUE_ARN = str({"Fn::GetAtt": ["WritebackQueue", "Arn"]})


def props(logical_id: str) -> dict[str, Any]:
    return RESOURCES[logical_id]["Properties"]  # type: ignore[no-any-return]


def grants(function: str) -> set[tuple[str, str]]:
    pairs = set()
    for policy in props(function)["Policies"]:
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            pairs |= {(action, str(resource)) for action in actions for resource in resources}
    return pairs


def event(function: str, kind: str) -> dict[str, Any]:
    (found,) = [e["Properties"] for e in props(function)["Events"].values() if e["Type"] == kind]
    return found  # type: ignore[no-any-return]


def filters() -> list[dict[str, Any]]:
    return [
        json.loads(item["Pattern"])
        for item in event("WritebackFeedFunction", "DynamoDB")["FilterCriteria"]["Filters"]
    ]


def image(status: str, **extra: str) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": {"S": "FY-1#sale"}, "status": {"S": status}, "updatedAt": {"N": "1"}}
    item.update({name: {"N": value} for name, value in extra.items()})
    return item


def record(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    stream: dict[str, Any] = {"Keys": {"pk": {"S": "FY-1#sale"}}, "SequenceNumber": "1"}
    if old is not None:
        stream["OldImage"] = old
    if new is not None:
        stream["NewImage"] = new
    name = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
    return {"eventID": "e", "eventName": name, "eventSource": "aws:dynamodb", "dynamodb": stream}


# (name, old image, new image, told to the ERP)
TRANSITIONS = [
    ("accepted", None, image("QUEUED"), False),
    ("claimed", image("QUEUED"), image("IN_PROGRESS"), False),
    ("retrying", image("IN_PROGRESS"), image("RETRYING"), False),
    ("reconciled (stamped)", image("QUEUED"), image("QUEUED"), False),
    ("invoiced", image("IN_PROGRESS"), image("INVOICED"), True),
    ("rejected", image("IN_PROGRESS"), image("REJECTED"), True),
    ("dead-lettered", image("RETRYING"), image("RETRYING", deadLetteredAt="5"), True),
    ("redriven and claimed", image("RETRYING", deadLetteredAt="5"), image("IN_PROGRESS"), True),
    ("replayed or resubmitted", image("REJECTED"), image("QUEUED"), True),
    ("expired (TTL)", image("INVOICED"), None, False),
    ("stored body", None, {"pk": {"S": "body#FY-1#sale"}, "body": {"S": "{}"}}, False),
]


@pytest.mark.parametrize(("name", "old", "new", "told"), TRANSITIONS, ids=[t[0] for t in TRANSITIONS])
def test_the_stream_filter_passes_exactly_the_changes_the_erp_is_told(
    name: str, old: dict[str, Any] | None, new: dict[str, Any] | None, told: bool
) -> None:
    assert matches_any(filters(), record(old, new)) is told, name


def test_the_ledger_streams_old_and_new_images_from_the_oldest_change() -> None:
    assert props("InvoiceLedgerTable")["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    stream = event("WritebackFeedFunction", "DynamoDB")
    assert stream["Stream"] == {"Fn::GetAtt": ["InvoiceLedgerTable", "StreamArn"]}
    assert stream["StartingPosition"] == "TRIM_HORIZON"
    # The feed only fails when SQS refuses: it retries until the change is queued, resuming
    # at the first change not queued
    assert (stream["MaximumRetryAttempts"], stream["MaximumRecordAgeInSeconds"]) == (-1, -1)
    assert stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_write_back_queue_is_fifo_with_a_patient_dead_letter_queue() -> None:
    queue, dead = props("WritebackQueue"), props("WritebackDeadLetterQueue")
    assert queue["FifoQueue"] is True
    assert dead["FifoQueue"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["WritebackDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "WritebackMaxReceiveCount"},
    }
    # A batch's messages are invisible for six of the function's timeouts, as Lambda advises
    assert queue["VisibilityTimeout"] >= 6 * props("WritebackFunction")["Timeout"]
    # The messages outlive the retries by days, and a dead letter is kept the longest SQS allows
    assert queue["MessageRetentionPeriod"] >= 2 * 86_400
    assert dead["MessageRetentionPeriod"] == 1_209_600
    assert RESOURCES["WritebackDeadLetterQueue"]["DeletionPolicy"] == "Retain"
    sqs = event("WritebackFunction", "SQS")
    assert sqs["Queue"] == {"Fn::GetAtt": ["WritebackQueue", "Arn"]}
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sqs["BatchSize"] <= 10  # a FIFO source's limit
    assert "MaximumBatchingWindowInSeconds" not in sqs  # FIFO sources take none
    assert sqs["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WritebackMaxConcurrency"}


def test_the_write_back_functions_have_least_privilege() -> None:
    # The feed only queues; the write-back reads one entry, delays its own messages and reads
    # its two secrets: no write to the ledger, no Fynd or webhook secret
    assert grants("WritebackFeedFunction") == {("sqs:SendMessage", QUEUE_ARN)}
    assert grants("WritebackFunction") == {
        ("dynamodb:GetItem", TABLE_ARN),
        ("sqs:ChangeMessageVisibility", QUEUE_ARN),
        ("secretsmanager:GetSecretValue", str({"Ref": "ErpNextCredentialsSecret"})),
        ("secretsmanager:GetSecretValue", str({"Ref": "CallbackSigningSecret"})),
    }
    # And no other function reads the write-back's secrets
    for function in ("IngestFunction", "DispatchFunction", "ReconcileFunction"):
        assert not any("ErpNext" in r or "Callback" in r for _, r in grants(function)), function


def test_the_write_back_is_configured_from_parameters_and_secrets_only() -> None:
    variables = props("WritebackFunction")["Environment"]["Variables"]
    assert variables == {
        "WRITEBACK_QUEUE_URL": {"Ref": "WritebackQueue"},
        "ERPNEXT_URL": {"Ref": "ErpNextUrl"},
        "ERPNEXT_CREDENTIALS_SECRET_ARN": {"Ref": "ErpNextCredentialsSecret"},
        "RELAY_CALLBACK_URL": {"Ref": "CallbackUrl"},
        "CALLBACK_SECRET_ARN": {"Ref": "CallbackSigningSecret"},
    }
    for secret in ("ErpNextCredentialsSecret", "CallbackSigningSecret"):
        assert "SecretString" not in props(secret)  # generated: no value in the template
        assert RESOURCES[secret]["DeletionPolicy"] == "Retain"
    for parameter in ("ErpNextUrl", "CallbackUrl"):
        assert TEMPLATE["Parameters"][parameter]["Default"] == ""


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("", True),
        ("https://erp.example.com", True),
        ("http://erp.example.com", False),
        ("erp.example.com", False),
    ],
)
def test_write_back_urls_are_https_or_empty(url: str, allowed: bool) -> None:
    import re

    for parameter in ("ErpNextUrl", "CallbackUrl"):
        assert bool(re.fullmatch(TEMPLATE["Parameters"][parameter]["AllowedPattern"], url)) is allowed


def test_the_generated_callback_secret_is_a_usable_signing_key() -> None:
    # The template generates 32 letters and digits: bare base64 of 24 bytes, the least allowed
    from relay.domain.standard_webhooks import secret_key

    spec = props("CallbackSigningSecret")["GenerateSecretString"]
    assert (spec["PasswordLength"], spec["ExcludePunctuation"], spec["GenerateStringKey"]) == (
        32,
        True,
        "secret",
    )
    assert len(secret_key("A1" * 16)) == 24
