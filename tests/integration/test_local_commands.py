"""`python -m relay_local send | status | invoke`, run as a user runs them: separate processes.

`send` and `status` talk over HTTP to a relay started in this process (the `relay` fixture);
`invoke` builds its own stack and runs one function per event file of events/, as `sam
local invoke -e` would, so every event file is shown to get the answer it is meant to get.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from relay_client import RelayClient
from relay_local.events import EVENTS_DIR
from relay_local.signing import new_secret, signed_headers

ROOT = Path(__file__).resolve().parents[2]


def command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        name: value for name, value in os.environ.items() if name not in ("WEBHOOK_SECRET", "FYND_BASE_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "relay_local", *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def for_relay(relay: RelayClient) -> dict[str, str]:
    return {"WEBHOOK_SECRET": relay.secret, "RELAY_API_URL": relay.pipeline.api_url}


def answer_of(output: str) -> Any:
    """The JSON after the status line `send`/`status` print."""
    return json.loads(output[output.index("\n", output.index("\n") + 1) :])


def answers_of(output: str) -> list[Any]:
    """Every JSON document `invoke` printed, in order."""
    decoder, found, rest = json.JSONDecoder(), [], output.strip()
    while rest:
        document, end = decoder.raw_decode(rest)
        found.append(document)
        rest = rest[end:].lstrip()
    return found


def test_send_posts_a_signed_file_and_status_follows_it(relay: RelayClient) -> None:
    # Given a running relay and its secret
    # When the sample invoice and the sample credit note are sent
    sent = [
        command("send", f"events/{name}", env=for_relay(relay))
        for name in ("invoice.json", "credit-note.json")
    ]
    # Then both are accepted
    for result in sent:
        assert result.returncode == 0, result.stderr
        assert "\n202 Accepted\n" in result.stdout
    assert answer_of(sent[0].stdout)["invoices"][0] == {
        "orderId": "FY-10001",
        "invoiceType": "sale",
        "invoiceNumber": "INV-2025-10001",
        "status": "QUEUED",
    }
    relay.wait_for_final(("FY-10001", "sale"), ("FY-10002", "return"))
    # And `status` reports each as INVOICED (a credit note with --type return)
    sale = command("status", "FY-10001", env=for_relay(relay))
    credit_note = command("status", "FY-10002", "--type", "return", env=for_relay(relay))
    assert (sale.returncode, answer_of(sale.stdout)["status"]) == (0, "INVOICED")
    assert (credit_note.returncode, answer_of(credit_note.stdout)["status"]) == (0, "INVOICED")
    assert relay.simulator.state.invoice_count("FY-10001") == 1


def test_send_exits_non_zero_on_a_refusal(relay: RelayClient, tmp_path: Path) -> None:
    # Given an invoice without its invoiceNumber, and a relay with another secret
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"orderId": "FY-1", "invoiceType": "sale"}))
    # When it is sent, and the sample is sent with the wrong secret
    refused = command("send", str(invalid), env=for_relay(relay))
    unsigned = command(
        "send", "events/invoice.json", env={**for_relay(relay), "WEBHOOK_SECRET": new_secret()}
    )
    unknown = command("status", "FY-NEVER-SENT", env=for_relay(relay))
    # Then each prints the relay's answer and exits 1
    assert (refused.returncode, answer_of(refused.stdout)["errors"][0]["field"]) == (1, "invoiceNumber")
    assert "\n422 " in refused.stdout
    assert (unsigned.returncode, answer_of(unsigned.stdout)["title"]) == (1, "Signature refused")
    assert (unknown.returncode, answer_of(unknown.stdout)["status"]) == (1, 404)


def test_send_explains_what_is_missing_before_sending(tmp_path: Path) -> None:
    # Given no secret, a file that is not JSON, and nothing listening
    not_json = tmp_path / "notes.txt"
    not_json.write_text("orderId=FY-1")
    nobody = {"WEBHOOK_SECRET": new_secret(), "RELAY_API_URL": "http://127.0.0.1:9"}
    # When send runs, Then it exits 2 with a message saying what to do
    no_secret = command("send", "events/invoice.json")
    assert (no_secret.returncode, "WEBHOOK_SECRET is not set" in no_secret.stderr) == (2, True)
    bad_file = command("send", str(not_json), env=nobody)
    assert (bad_file.returncode, "is not JSON" in bad_file.stderr) == (2, True)
    no_relay = command("send", "events/invoice.json", env=nobody)
    assert no_relay.returncode == 2
    # naming the address it tried and where that came from (a run may serve on another port)
    assert "nothing answered at 127.0.0.1:9 " in no_relay.stderr
    assert "RELAY_API_URL=http://127.0.0.1:9" in no_relay.stderr
    assert "Traceback" not in no_secret.stderr + bad_file.stderr + no_relay.stderr


def test_invoke_runs_ingest_on_every_http_event() -> None:
    # Given the HTTP events of events/, signed long ago with the local secret
    names = ["ingest-post-invoice", "ingest-post-credit-note", "ingest-post-invalid", "ingest-get-status"]
    # When IngestFunction is invoked on them in turn, on one fresh stack
    result = command("invoke", "IngestFunction", *(f"events/{name}.json" for name in names))
    # Then each is re-signed with the current time and gets its intended answer
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("re-signed it with the current time") == 4
    answers = answers_of(result.stdout)
    assert [answer["statusCode"] for answer in answers] == [202, 202, 422, 200]
    bodies = [json.loads(answer["body"]) for answer in answers]
    assert bodies[0]["invoices"][0]["status"] == "QUEUED"
    assert bodies[1]["invoices"][0]["invoiceType"] == "return"
    assert {error["field"] for error in bodies[2]["errors"]} == {"invoiceNumber", "orderItems.0.quantity"}
    assert (bodies[3]["orderId"], bodies[3]["status"]) == ("FY-10001", "QUEUED")
    # And the functions' logs went to stderr, readable
    assert "ingest   INFO    invoices accepted invoice_keys=FY-10001#sale" in result.stderr


def test_invoke_status_alone_finds_nothing_on_a_fresh_stack() -> None:
    # Given only the status event
    # When it is invoked, Then the signature holds and the ledger is empty: 404
    result = command("invoke", "IngestFunction", "events/ingest-get-status.json")
    assert result.returncode == 0, result.stderr
    assert answers_of(result.stdout)[0]["statusCode"] == 404


def test_invoke_runs_dispatch_on_the_sqs_event() -> None:
    # Given the SQS event: two good orders and a cancelled one
    # When DispatchFunction is invoked on it
    result = command("invoke", "DispatchFunction", "events/dispatch-sqs-batch.json")
    # Then the batch is fully handled: nothing comes back to the queue
    assert result.returncode == 0, result.stderr
    assert answers_of(result.stdout) == [{"batchItemFailures": []}]
    assert "invoice accepted by Fynd invoice_key=FY-20001#sale" in result.stderr
    assert "invoice rejected by Fynd invoice_key=CANCELLED-20003#sale code=IN401" in result.stderr


def test_invoke_runs_the_reconciler_on_the_scheduled_event() -> None:
    # Given the scheduled event and a fresh stack
    # When ReconcileFunction is invoked on it, as `make invoke FN=ReconcileFunction` does
    result = command("invoke", "ReconcileFunction", "events/reconcile-scheduled.json")
    # Then it ran over the ledger's index and found nothing stalled
    assert result.returncode == 0, result.stderr
    assert answers_of(result.stdout) == [{"requeued": {}, "returned": 0, "failed": [], "complete": True}]


def test_invoke_never_re_signs_another_secrets_event(tmp_path: Path) -> None:
    # Given the sample POST signed just now, but with some other secret
    event = json.loads((EVENTS_DIR / "ingest-post-invoice.json").read_text())
    event["headers"].update(signed_headers(new_secret(), event["body"], msg_id="msg_foreign"))
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(event))
    stale = tmp_path / "foreign-stale.json"
    event["headers"].update(signed_headers(new_secret(), event["body"], msg_id="msg_old", at=1_700_000_000))
    stale.write_text(json.dumps(event))
    # When IngestFunction is invoked on them
    result = command("invoke", "IngestFunction", str(foreign), str(stale))
    # Then both are refused as AWS would refuse them, and neither was touched
    assert [answer["statusCode"] for answer in answers_of(result.stdout)] == [401, 401]
    assert "re-signed" not in result.stderr


def test_invoke_names_the_functions_it_knows() -> None:
    # When an unknown function is named, Then invoke says which exist and exits 2
    result = command("invoke", "PaymentFunction", "events/dispatch-sqs-batch.json")
    assert result.returncode == 2
    assert "functions: DispatchFunction, IngestFunction" in result.stderr
