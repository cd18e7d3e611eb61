"""Running the `relay` command against a LocalPipeline, as an operator would.

`run_relay` runs the installed console script in a child process (the relay's functions
log to this process's stdout, which must not mix with the command's), pointed at the
pipeline's API and AWS endpoint, and returns its exit code, stdout and stderr apart, so
`--json` output can be parsed whole.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.domain.invoice import Invoice, InvoiceKey
from relay.domain.messages import QueuedInvoice
from relay_client import RelayClient

RELAY_SCRIPT = shutil.which("relay", path=str(Path(sys.executable).parent))
_OWN_VARIABLES = ("RELAY_STACK", "RELAY_API_URL", "RELAY_AWS_ENDPOINT", "WEBHOOK_SECRET")


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_relay(relay: RelayClient, *args: str, target: tuple[str, ...] | None = None) -> Run:
    pipeline = relay.pipeline
    where = target or (
        "--api-url",
        pipeline.api_url,
        "--endpoint-url",
        pipeline.moto.url,
        "--secret",
        relay.secret,
    )
    assert RELAY_SCRIPT is not None, "the `relay` console script is not installed: make install"
    environment = {name: value for name, value in os.environ.items() if name not in _OWN_VARIABLES}
    done = subprocess.run(
        [RELAY_SCRIPT, *where, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def index_statuses(relay: RelayClient, *keys: InvoiceKey) -> None:
    """Set `statusKey` as the contract says every status write does (INVOICED removes it).

    Claim and record write it (main); ingest's accept writes it from the reconcile branch on.
    Until that lands a QUEUED entry has none, and this stands in; then it finds nothing to do.
    """
    dynamodb = relay.pipeline.dynamodb()
    assert relay.pipeline.stack is not None
    table = relay.pipeline.stack.table_name
    for key in keys:
        item = dynamodb.get_item(TableName=table, Key={"pk": {"S": str(key)}}, ConsistentRead=True)["Item"]
        status = item["status"]["S"]
        if status == "INVOICED" and "statusKey" in item:
            dynamodb.update_item(
                TableName=table, Key={"pk": {"S": str(key)}}, UpdateExpression="REMOVE statusKey"
            )
        elif status != "INVOICED" and item.get("statusKey", {}).get("S") != status:
            dynamodb.update_item(
                TableName=table,
                Key={"pk": {"S": str(key)}},
                UpdateExpression="SET statusKey = :status",
                ExpressionAttributeValues={":status": {"S": status}},
            )


def keep_body_as_ingest_does(relay: RelayClient, payload: dict[str, Any]) -> None:
    """The body item ingest's accept transaction writes (`body#<orderId>#<invoiceType>`),
    if it is not there: ingest writes it from the reconcile branch on; until then the test
    stores exactly what ingest queued."""
    dynamodb = relay.pipeline.dynamodb()
    assert relay.pipeline.stack is not None
    table = relay.pipeline.stack.table_name
    invoice = Invoice.model_validate(payload)
    body_pk = {"pk": {"S": f"body#{invoice.key}"}}
    if dynamodb.get_item(TableName=table, Key=body_pk, ConsistentRead=True).get("Item"):
        return
    entry = dynamodb.get_item(TableName=table, Key={"pk": {"S": str(invoice.key)}}, ConsistentRead=True)[
        "Item"
    ]
    message = QueuedInvoice(
        invoice=invoice,
        content_hash=invoice.content_hash(),
        accepted_at=float(entry["acceptedAt"]["N"]),
        correlation_id=entry.get("correlationId", {}).get("S") or None,
    )
    dynamodb.put_item(TableName=table, Item={**body_pk, "body": {"S": message.to_body()}})
