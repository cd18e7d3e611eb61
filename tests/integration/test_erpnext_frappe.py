"""ERPNext's Webhook against the local relay started as `make run` starts it, with FRAPPE_WEBHOOK_SECRET.

The sender reproduces Frappe's bytes and headers (tests/frappe_sender.py) from the shipped
Webhook documents rendered with realistic Sales Invoices.
"""

import dataclasses
import json
import signal
import time
from collections.abc import Callable, Iterator

import pytest
from test_local_run import _URL, start_run  # `make run`'s process, as its own test starts it

from frappe_sender import (
    E_INVOICE_WEBHOOK,
    SALE_WEBHOOK,
    FrappeRequest,
    e_invoice_log,
    frappe_request,
    render,
    sales_invoice,
    webhook_document,
)
from function_output import FunctionOutput
from fynd_simulator import SimulatorControl
from relay import wiring
from relay_client import FAST_RETRIES, RelayClient
from relay_local.environment import run_settings
from relay_local.pipeline import LocalPipeline
from relay_local.run import pipeline_config
from relay_local.stack import TEMPLATE

SECRET = "erpnext-webhook-secret-for-the-tests-0001"
NEXT_SECRET = "erpnext-webhook-secret-for-the-tests-0002"
SHORT_SECRET = "short-frappe-typo"


@pytest.fixture
def erpnext_relay(request: pytest.FixtureRequest) -> Iterator[RelayClient]:
    """The relay as `FRAPPE_WEBHOOK_SECRET=... make run` builds it, with the functions in this
    process (so a test can expire the secret cache, as five minutes would); param False leaves
    the consumer off."""
    settings = run_settings({"FRAPPE_WEBHOOK_SECRET": SECRET, "RELAY_API_PORT": "0", **FAST_RETRIES})
    config = pipeline_config(settings, TEMPLATE, {})
    consume = getattr(request, "param", True)
    with LocalPipeline(dataclasses.replace(config, consume=consume, isolated=False)) as pipeline:
        yield RelayClient(pipeline, settings.webhook_secret)


def sale_request(secret: str = SECRET) -> FrappeRequest:
    data = render(webhook_document(E_INVOICE_WEBHOOK), e_invoice_log(), sales_invoice())
    return frappe_request(data, secret)


def return_request(secret: str = SECRET) -> FrappeRequest:
    data = render(webhook_document(SALE_WEBHOOK), sales_invoice("sales-invoice-return.json"))
    return frappe_request(data, secret)


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def drained(relay: RelayClient) -> bool:
    tally = relay.pipeline.tally()
    return tally.sqs_waiting == 0 and tally.sqs_invisible == 0


def test_make_run_with_frappe_secret_accepts_and_invoices_a_sale_and_a_return() -> None:
    # Given `FRAPPE_WEBHOOK_SECRET=... make run` (its process, on free ports)
    run = start_run({"FRAPPE_WEBHOOK_SECRET": SECRET})
    try:
        run.wait_for_output("Ctrl-C stops everything")
        api_url = run.wait_for_output(rf"API +{_URL}").group(1)
        fynd = SimulatorControl(run.wait_for_output(rf"Fynd +{_URL}").group(1))
        assert "frappe        preset enabled" in run.text()
        assert SECRET not in run.text()
        # When ERPNext posts an e-invoiced sale and a credit note, exactly as Frappe sends them
        sale, credit_note = sale_request(), return_request()
        assert "Content-Type" not in sale.headers
        answers = [
            run.http.request("POST", f"{api_url}/v1/invoices", body=request.body, headers=request.headers)
            for request in (sale, credit_note)
        ]
        # Then both are accepted and queued
        assert [answer.status for answer in answers] == [202, 202]
        assert [json.loads(answer.data)["invoices"] for answer in answers] == [
            [
                {
                    "orderId": "FY-30001",
                    "invoiceType": "sale",
                    "invoiceNumber": "SINV-26-00042",
                    "status": "QUEUED",
                }
            ],
            [
                {
                    "orderId": "FY-30002",
                    "invoiceType": "return",
                    "invoiceNumber": "CN-26-00007",
                    "status": "QUEUED",
                }
            ],
        ]
        # And both end INVOICED, each invoiced at Fynd once
        run.api_url = api_url
        assert run.wait_for_final(["FY-30001"])["FY-30001"]["status"] == "INVOICED"
        wait_until(lambda: run.status("FY-30002", "return")[1].get("status") == "INVOICED")
        orders = fynd.orders()
        assert (orders["FY-30001"].invoice_count, orders["FY-30002"].invoice_count) == (1, 1)
        # And a wrong secret is refused
        forged = sale_request("a-secret-that-is-not-the-relays-0003")
        assert (
            run.http.request(
                "POST", f"{api_url}/v1/invoices", body=forged.body, headers=forged.headers
            ).status
            == 401
        )
    finally:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGINT)
            run.process.wait(timeout=20)


@pytest.mark.parametrize(
    ("forge", "detail"),
    [
        (lambda: sale_request("a-secret-that-is-not-the-relays-0003"), "frappe: no matching signature"),
        (
            lambda: FrappeRequest(
                sale_request().body.replace(b"SINV-26-00042", b"SINV-26-00043"), sale_request().headers
            ),
            "frappe: no matching signature",
        ),
        (
            lambda: frappe_request(json.loads(sale_request().body), None),
            "standard-webhooks: missing signature header(s): webhook-id, webhook-timestamp,"
            " webhook-signature; or X-Frappe-Webhook-Signature (frappe)",
        ),
    ],
    ids=["wrong secret", "tampered body", "Enable Security off"],
)
def test_wrong_secret_tampered_body_or_no_signature_is_refused_with_401(
    erpnext_relay: RelayClient, forge: Callable[[], FrappeRequest], detail: str
) -> None:
    # Given a request signed with another secret, changed after Frappe signed it, or not signed
    request = forge()
    # When it reaches the relay (without a content type, as Frappe sends it)
    answer = erpnext_relay.post_raw(request.body, request.headers)
    # Then it is refused, naming the scheme tried, and nothing is recorded
    assert answer.status == 401
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert (answer.body["title"], answer.body["detail"]) == ("Signature refused", detail)
    assert erpnext_relay.status("FY-30001").status == 404


@pytest.mark.parametrize("erpnext_relay", [False], indirect=True)
def test_a_replay_gets_the_same_answer_and_is_never_sent_twice(erpnext_relay: RelayClient) -> None:
    # Given a sale Frappe sent once (the consumer still stopped)
    request = sale_request()
    first = erpnext_relay.post_raw(request.body, request.headers)
    # When Frappe sends the very same request again (its retry after a timeout, or a captured replay)
    replay = erpnext_relay.post_raw(request.body, request.headers)
    # Then the answer is the same: accepted, the same invoice, still QUEUED
    assert replay.status == first.status == 202
    assert replay.body == first.body
    assert first.body["invoices"][0]["status"] == "QUEUED"
    # And once delivered, a later replay is answered with the final state and queues nothing
    erpnext_relay.pipeline.start_consumer()
    erpnext_relay.wait_for_final(("FY-30001", "sale"))
    late = erpnext_relay.post_raw(request.body, request.headers)
    assert (late.status, late.body["invoices"][0]["status"]) == (202, "INVOICED")
    wait_until(lambda: drained(erpnext_relay))
    assert erpnext_relay.simulator.state.invoice_count("FY-30001") == 1
    assert erpnext_relay.status("FY-30001").body["attempts"] == 1


def test_two_frappe_secrets_verify_during_rotation_and_never_reach_the_logs(
    erpnext_relay: RelayClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FunctionOutput.capture(capsys, monkeypatch) as output:
        # Given the operator added the next secret beside the current one (a Secrets Manager
        # update), and by mistake an entry too short to be used
        secrets = erpnext_relay.pipeline.secretsmanager()
        assert erpnext_relay.pipeline.stack is not None
        arn = erpnext_relay.pipeline.stack.secret_arns["WebhookSigningSecret"]
        entries = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])
        rotated = {
            "local": entries["local"],
            "frappe:current": entries["frappe"],
            "frappe:next": NEXT_SECRET,
            "frappe:typo": SHORT_SECRET,
        }
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(rotated))
        wiring.forget()  # what the 5-minute secret cache does in time
        # When ERPNext signs with either secret, Then both are accepted
        assert erpnext_relay.post_raw(*_wire(sale_request(SECRET))).status == 202
        assert erpnext_relay.post_raw(*_wire(return_request(NEXT_SECRET))).status == 202
        # And once the old secret is removed, it is refused
        del rotated["frappe:current"]
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps(rotated))
        wiring.forget()
        assert erpnext_relay.post_raw(*_wire(sale_request(SECRET))).status == 401
        assert erpnext_relay.post_raw(*_wire(sale_request(NEXT_SECRET))).status == 202
        # And the unusable entry is named in a warning, while no secret is in any log line
        lines = output.lines()
    assert any(
        log.get("message") == "signing secret entry ignored" and log.get("entry") == "frappe:typo"
        for log in output.json_logs()
    )
    for secret in (SECRET, NEXT_SECRET, SHORT_SECRET):
        assert not [line for line in lines if secret in line]


def _wire(request: FrappeRequest) -> tuple[bytes, dict[str, str]]:
    return request.body, request.headers
