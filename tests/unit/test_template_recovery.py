"""template.yaml's scheduled recovery (relay.handlers.recover): its schedule and retries, least
privilege, the write-back's ERPNext parameters and secret reused, its Request URL."""

import re
from typing import Any

from test_template_writeback import RESOURCES, TABLE_ARN, TEMPLATE, event, grants, props

from relay_local.stack import load_template, template_conditions, with_conditions

INVOICE_QUEUE_ARN = str({"Fn::GetAtt": ["InvoiceQueue", "Arn"]})
ERPNEXT_SECRET = str({"Ref": "ErpNextCredentialsSecret"})


def defaults(**overrides: str) -> dict[str, str]:
    values = {name: str(spec.get("Default", "")) for name, spec in TEMPLATE["Parameters"].items()}
    return {**values, **overrides}


def variables(**parameters: str) -> dict[str, Any]:
    environment = props("RecoverFunction")["Environment"]["Variables"]
    chosen: dict[str, Any] = with_conditions(
        environment, template_conditions(load_template(), defaults(**parameters))
    )
    return chosen


def test_recovery_runs_every_quarter_hour_and_a_failed_run_waits_for_the_next() -> None:
    schedule = event("RecoverFunction", "Schedule")
    assert schedule["Schedule"] == "rate(15 minutes)"
    # Neither EventBridge nor Lambda retries a failed run: the next run reads the same window
    assert schedule["RetryPolicy"] == {"MaximumRetryAttempts": 0}
    assert props("RecoverFunction")["EventInvokeConfig"] == {"MaximumRetryAttempts": 0}
    # And the window outlasts Frappe's 27 hours of retries by default, and a schedule period at least
    lookback = TEMPLATE["Parameters"]["RecoveryLookbackHours"]
    assert lookback["Default"] >= 27 + 12
    assert lookback["MinValue"] > 12
    assert variables()["RECOVERY_LOOKBACK_HOURS"] == {"Ref": "RecoveryLookbackHours"}


def test_recovery_has_least_privilege() -> None:
    # The webhook's intake (as ingest: no Query, no Scan, no delete) and the ERPNext key pair alone
    assert grants("RecoverFunction") == {
        ("dynamodb:GetItem", TABLE_ARN),
        ("dynamodb:BatchGetItem", TABLE_ARN),
        ("dynamodb:UpdateItem", TABLE_ARN),
        ("sqs:SendMessage", INVOICE_QUEUE_ARN),
        ("secretsmanager:GetSecretValue", ERPNEXT_SECRET),
    }
    assert {action for action, _ in grants("RecoverFunction")} <= {
        action for action, _ in grants("IngestFunction")
    } | {"secretsmanager:GetSecretValue"}


def test_recovery_reads_the_write_back_site_with_its_key_pair() -> None:
    environment = variables()
    assert environment["ERPNEXT_URL"] == {"Ref": "ErpNextUrl"}
    assert environment["ERPNEXT_CREDENTIALS_SECRET_ARN"] == {"Ref": "ErpNextCredentialsSecret"}


def test_recovery_reads_the_rows_of_the_stacks_own_url_unless_told_another() -> None:
    # By default, the Request URL is this stack's API + /v1/invoices, the route ingest serves
    own = variables()["RECOVERY_WEBHOOK_URL"]
    assert own == {
        "Fn::Sub": "https://${ServerlessHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/v1/invoices"
    }
    routes = [e["Properties"] for e in props("IngestFunction")["Events"].values() if e["Type"] == "HttpApi"]
    assert {"Method": "POST", "Path": "/v1/invoices"} in routes
    # A custom domain in front of it is named by ErpNextWebhookUrl, https only
    custom = "https://invoices.example.com/v1/invoices"
    assert variables(ErpNextWebhookUrl=custom)["RECOVERY_WEBHOOK_URL"] == {"Ref": "ErpNextWebhookUrl"}
    pattern = TEMPLATE["Parameters"]["ErpNextWebhookUrl"]["AllowedPattern"]
    assert re.fullmatch(pattern, custom)
    assert re.fullmatch(pattern, "")
    assert not re.fullmatch(pattern, "http://invoices.example.com/v1/invoices")


def test_recovery_has_its_log_group_and_its_alarm_on_the_dashboard() -> None:
    log_group = props("RecoverFunctionLogGroup")
    assert log_group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${RecoverFunction}"}
    dashboard = props("RelayDashboard")["DashboardBody"]["Fn::Sub"]
    assert "${RecoveryFailingAlarm.Arn}" in dashboard
    assert RESOURCES["RecoveryFailingAlarm"]["Properties"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": "RecoverFunction"}}
    ]
