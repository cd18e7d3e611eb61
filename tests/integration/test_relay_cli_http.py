"""`relay send`, `status` and `smoke` against the local relay, by URL and by stack name."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relay_cli.app import app
from relay_cli_support import run_relay
from relay_client import RelayClient

EVENTS = Path(__file__).resolve().parents[2] / "events"
COMMANDS = ("send", "status", "list", "redrive", "replay", "stats", "report", "smoke")


def test_send_then_status_as_json_and_as_tables(relay: RelayClient) -> None:
    # Given the sample invoice
    # When an operator sends it
    sent = run_relay(relay, "send", str(EVENTS / "invoice.json"), "--json")
    # Then the relay accepted it, and --json is one parsable document with the answer
    assert sent.exit_code == 0
    assert sent.json()["httpStatus"] == 202
    assert sent.json()["body"]["invoices"][0]["orderId"] == "FY-10001"
    relay.settle("FY-10001")
    # When they ask for its status
    status = run_relay(relay, "status", "FY-10001", "--json")
    table = run_relay(relay, "status", "FY-10001")
    # Then the status API's document comes back, and the table shows it to people
    assert status.exit_code == 0
    assert status.json()["status"] == "INVOICED"
    assert table.exit_code == 0
    assert "INVOICED" in table.stdout
    assert "FY-10001" in table.stdout


def test_a_refused_send_and_an_unknown_order_exit_1(relay: RelayClient, tmp_path: Path) -> None:
    # Given an invoice without its invoiceNumber
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"orderId": "FY-1", "invoiceType": "sale"}))
    # When it is sent, and an order never sent is asked for
    sent = run_relay(relay, "send", str(bad), "--json")
    shown = run_relay(relay, "send", str(bad))
    unknown = run_relay(relay, "status", "NEVER-SENT", "--json")
    # Then each exits 1 with the relay's problem answer
    assert (sent.exit_code, sent.json()["httpStatus"]) == (1, 422)
    assert sent.json()["body"]["errors"][0]["field"] == "invoiceNumber"
    assert shown.exit_code == 1
    assert "invoiceNumber" in shown.stdout
    assert (unknown.exit_code, unknown.json()["status"]) == (1, 404)


def test_a_relay_that_does_not_answer_exits_3(relay: RelayClient) -> None:
    # Given nothing listening where the API should be
    target = ("--api-url", "http://127.0.0.1:9", "--secret", relay.secret)
    # When an operator asks for a status there
    run = run_relay(relay, "status", "FY-1", target=target)
    # Then the command says so and exits 3
    assert run.exit_code == 3
    assert "no relay answering" in run.stderr


def test_smoke_proves_a_stack_found_by_its_name(relay: RelayClient) -> None:
    # Given a CloudFormation stack whose outputs name this relay (on the local AWS endpoint),
    # and whose signing secret is in Secrets Manager as a deploy generates it
    stack_name = publish_stack_outputs(relay)
    target = ("--stack", stack_name, "--region", "ap-south-1", "--endpoint-url", relay.pipeline.moto.url)
    # When `relay smoke` runs against it by name
    run = run_relay(relay, "smoke", "--location", "WH-1", "--json", target=target)
    # Then one invoice went through end to end and was invoiced
    assert run.exit_code == 0, run.stderr
    result = run.json()
    assert (result["passed"], result["status"]) == (True, "INVOICED")
    assert relay.simulator.state.invoice_count(result["orderId"]) == 1


def test_smoke_fails_when_fynd_refuses_the_credentials(relay: RelayClient) -> None:
    # Given a Fynd that refuses every token request
    relay.pipeline.secretsmanager().put_secret_value(
        SecretId=relay.pipeline.stack.references["FyndCredentialsSecret"] if relay.pipeline.stack else "",
        SecretString=json.dumps({"username": "wrong", "password": "wrong"}),
    )
    # When smoke runs with a short timeout
    run = run_relay(relay, "smoke", "--timeout", "4", "--json")
    # Then it fails (exit 1): the invoice never reached a final state, and the last error says why
    assert run.exit_code == 1
    assert run.json()["passed"] is False
    assert run.json()["status"] in ("QUEUED", "IN_PROGRESS", "RETRYING")


def test_every_command_has_help_and_the_console_script_is_installed() -> None:
    # Given the installed `relay` console script
    script = shutil.which("relay", path=str(Path(sys.executable).parent))
    assert script is not None
    # When asked for help
    top = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    # Then it lists every command and the exit codes, and each command has its own help
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
    assert "Exit codes" in top.stdout
    from typer.testing import CliRunner

    for command in COMMANDS:
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, command
        assert "--json" in result.stdout, command


@pytest.mark.parametrize("command", ["list", "stats", "redrive", "report --from 2026-01-01 --to 2026-01-02"])
def test_ledger_commands_without_an_aws_endpoint_say_what_is_missing(
    relay: RelayClient, command: str
) -> None:
    # Given only the API URL (no --endpoint-url, no --stack)
    target = ("--api-url", relay.pipeline.api_url, "--secret", relay.secret)
    # When a command that reads the ledger or the queues runs
    run = run_relay(relay, *command.split(), target=target)
    # Then it is bad usage (exit 2, as the exit codes say) and names the option to pass
    assert run.exit_code == 2
    assert "--endpoint-url" in run.stderr


def publish_stack_outputs(relay: RelayClient) -> str:
    """A stack on the local CloudFormation with the relay's outputs, as `sam deploy` leaves them."""
    pipeline = relay.pipeline
    assert pipeline.stack is not None
    session_clients = pipeline.sqs()  # the same local credentials and region
    region = session_clients.meta.region_name
    import boto3

    session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=region)
    secret_arn = session.client("secretsmanager", endpoint_url=pipeline.moto.url).create_secret(
        Name="DeployedWebhookSigningSecret",
        # As the template generates it: {"current": <32 letters and digits>}, given to the ERP as whsec_ + value.
        SecretString=json.dumps({"current": relay.secret.removeprefix("whsec_")}),
    )["ARN"]
    outputs = {
        "ApiUrl": pipeline.api_url,
        "InvoiceLedgerTableName": pipeline.stack.table_name,
        "InvoiceQueueUrl": pipeline.stack.queue_url,
        "InvoiceDeadLetterQueueUrl": pipeline.stack.dead_letter_queue_url,
        "WebhookSigningSecretArn": secret_arn,
    }
    template = {
        "Resources": {
            "Placeholder": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "smoke-placeholder"}}
        },
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    name = "fynd-invoice-relay-test"
    session.client("cloudformation", endpoint_url=pipeline.moto.url).create_stack(
        StackName=name, TemplateBody=json.dumps(template)
    )
    return name
