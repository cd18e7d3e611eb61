"""What the relay's log lines carry, and what they never carry.

Every line about an invoice names its key and the webhook-id of the request that accepted
it, even when one dispatcher batch mixes several webhooks. No line ever holds a secret, a
token or invoice content (signed invoice, QR data, IRN), on any path: success, every Fynd
code, outages, token refresh and failure, refusals, unreadable messages, and an ingest
failure whose traceback is logged.

Scanned: stdout and stderr (Powertools JSON logs, EMF, tracebacks) and every logging record,
with the relay's own logger at DEBUG. Third-party debug logging (botocore, urllib3) stays at
the level Lambda runs it at; docs/runbook.md says why it must not be raised.
"""

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from factories import invoice_dict
from function_output import FunctionOutput
from fynd_simulator import DEFAULT_PASSWORD
from relay.observability import logger
from relay_client import RelayClient
from relay_local.signing import new_secret, signed_headers

QUICK_BATCHES = {"parameters": {"DispatchBatchingWindowSeconds": "1"}}


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FunctionOutput]:
    level = logger.log_level
    logger.setLevel("DEBUG")
    try:
        with FunctionOutput.capture(capsys, monkeypatch) as captured:
            yield captured
    finally:
        logger.setLevel(level)


def with_secrets(order_id: str, **fields: Any) -> dict[str, Any]:
    """An invoice whose e-invoicing fields are unique values no log line may contain."""
    return invoice_dict(
        order_id,
        signedInvoice=f"SIGNED-{secrets.token_hex(16)}",
        invoiceQrCode=f"QR-{secrets.token_hex(16)}",
        irnNumber=f"IRN-{secrets.token_hex(16)}",
        **fields,
    )


def content_of(*invoices: dict[str, Any]) -> set[str]:
    return {
        invoice[field]
        for invoice in invoices
        for field in ("signedInvoice", "invoiceQrCode", "irnNumber")
        if field in invoice
    }


def wait_for_line(output: FunctionOutput, message: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.get("message") == message for line in output.json_logs()):
        assert time.monotonic() < deadline, f"no {message!r} line within {timeout} s"
        time.sleep(0.1)


def post_as(relay: RelayClient, webhook_id: str, payload: Any) -> None:
    body = json.dumps(payload)
    answer = relay.post(body=body, headers=signed_headers(relay.secret, body, msg_id=webhook_id))
    assert answer.status == 202, answer.body


@pytest.mark.parametrize("pipeline_config", [QUICK_BATCHES], indirect=True)
def test_no_log_line_holds_a_secret_a_token_or_invoice_content(
    relay: RelayClient, output: FunctionOutput
) -> None:
    sent: list[dict[str, Any]] = []
    # Given Fynd fails the first call (503) and drops the second after applying it
    relay.simulator.state.add_faults([{"kind": "status", "status": 503}, {"kind": "commit_then_drop"}])
    # When invoices for an order that succeeds, a cancelled one and an unconfirmed one go through
    first = [with_secrets("A"), with_secrets("CANCELLED-1"), with_secrets("EARLY-1")]
    sent += first
    assert relay.post(first).status == 202
    relay.wait_for_final(("A", "sale"), ("CANCELLED-1", "sale"), ("EARLY-1", "sale"))
    # And Fynd expires the token and refuses the next token request once
    relay.simulator.state.expire_tokens()
    relay.simulator.state.add_faults([{"kind": "status", "status": 401, "endpoint": "token"}])
    sent.append(with_secrets("B"))
    assert relay.post(sent[-1]).status == 202
    relay.wait_for_final(("B", "sale"))
    # And webhooks carrying secrets are refused for every reason
    unsigned, text, broken, invalid, conflicting = (with_secrets(f"C{n}") for n in range(5))
    sent += [unsigned, text, broken, invalid, conflicting]
    refused = {
        401: relay.post(unsigned, secret=new_secret()),
        415: relay.post(text, content_type="text/plain"),
        400: relay.post(body=json.dumps(broken)[:-1]),
        422: relay.post({**invalid, "unknownField": "x"}),
        409: relay.post({**conflicting, "orderId": "A", "invoiceNumber": "INV-OTHER"}),
    }
    assert {status: answer.status for status, answer in refused.items()} == {s: s for s in refused}
    # And an unreadable message carrying invoice content sits on the queue
    stack = relay.pipeline.stack
    assert stack is not None
    junk = with_secrets("D")
    relay.pipeline.sqs().send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps({"invoice": junk}))
    wait_for_line(output, "queue message is not a queued invoice")
    # And the queue disappears, so ingest fails on our side and logs the exception
    relay.pipeline.sqs().delete_queue(QueueUrl=stack.queue_url)
    failed = with_secrets("E")
    assert relay.post(failed, resend_5xx=False).status == 503

    # Then none of the secrets appears in any line
    tokens = {call.token for call in relay.simulator.state.calls() if call.token}
    assert len(tokens) >= 2, "the simulator issued a token, then a fresh one after expiry"
    webhook_key = relay.secret.removeprefix("whsec_")
    forbidden = {
        *content_of(*sent, junk, failed),
        relay.secret,
        webhook_key,
        DEFAULT_PASSWORD,
        *tokens,
    }
    lines = output.lines()
    leaks = [(value, line) for value in forbidden for line in lines if value in line]
    assert leaks == []
    # And the scan saw the paths it claims to cover
    messages = {line.get("message") for line in output.json_logs()}
    assert {
        "invoices accepted",
        "invoice accepted by Fynd",
        "invoice rejected by Fynd",
        "invoice will be retried",
        "Fynd call failed",
        "webhook refused",
        "invoices conflict with recorded ones",
        "queue message is not a queued invoice",
        "ingest could not complete",
    } <= messages
    (failure,) = [line for line in output.json_logs() if line.get("message") == "ingest could not complete"]
    assert "Traceback" in failure["exception"]


@pytest.mark.parametrize("pipeline_config", [{**QUICK_BATCHES, "consume": False}], indirect=True)
def test_dispatcher_lines_carry_each_invoices_key_and_webhook_id(
    relay: RelayClient, output: FunctionOutput
) -> None:
    # Given two webhooks, queued before the dispatcher runs, so one batch mixes them
    post_as(relay, "msg_first", [invoice_dict("A"), invoice_dict("CANCELLED-1")])
    post_as(relay, "msg_second", [invoice_dict("B"), invoice_dict("INVOICED-1")])
    # And Fynd fails the first call
    relay.simulator.state.add_faults([{"kind": "status", "status": 503}])
    # When the dispatcher delivers them, with retries
    relay.pipeline.start_consumer()
    relay.wait_for_final(*((order_id, "sale") for order_id in ("A", "CANCELLED-1", "B", "INVOICED-1")))
    # Then every dispatcher line about an invoice names it and the webhook that brought it
    webhook_of = {
        "A#sale": "msg_first",
        "CANCELLED-1#sale": "msg_first",
        "B#sale": "msg_second",
        "INVOICED-1#sale": "msg_second",
    }
    dispatched = [line for line in output.json_logs() if line.get("function_name") == "DispatchFunction"]
    about_one = [line for line in dispatched if "invoice_key" in line]
    assert {line["message"] for line in about_one} >= {
        "invoice accepted by Fynd",
        "invoice rejected by Fynd",
        "invoice will be retried",
    }
    assert {(line["invoice_key"], line.get("correlation_id")) for line in about_one} == set(
        webhook_of.items()
    )
    # And a line about a whole Fynd call names every key of the call
    (call_failed,) = [line for line in dispatched if line["message"] == "Fynd call failed"]
    assert sorted(call_failed["invoice_keys"]) == sorted(webhook_of)
    assert [line for line in dispatched if "invoice_key" not in line and "invoice_keys" not in line] == []
    # And ingest's lines carry the webhook-id as the correlation id
    accepted = [line for line in output.json_logs() if line.get("message") == "invoices accepted"]
    assert [line["correlation_id"] for line in accepted] == ["msg_first", "msg_second"]
