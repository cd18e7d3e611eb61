"""POST /v1/invoices and GET /v1/invoices/{orderId} over HTTP: every answer of relay-interface.md §1-2."""

import json
import time

import pytest

from factories import invoice_dict
from relay import wiring
from relay_client import FAST_RETRIES, RelayClient
from relay_local.pipeline import PipelineConfig
from relay_local.signing import new_secret, signed_headers


@pytest.fixture
def pipeline_config() -> PipelineConfig:
    # No consumer: what ingest queued stays on the queue for the test to count.
    return PipelineConfig(webhook_secret=new_secret(), environment=FAST_RETRIES, consume=False)


def queued(relay: RelayClient) -> list[dict[str, object]]:
    sqs = relay.pipeline.sqs()
    assert relay.pipeline.stack is not None
    bodies = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=relay.pipeline.stack.queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(json.loads(message["Body"]) for message in messages)


def test_array_is_accepted_all_at_once(relay: RelayClient) -> None:
    answer = relay.post([invoice_dict("A"), invoice_dict("B", invoiceType="return")])
    assert answer.status == 202
    assert [(i["orderId"], i["invoiceType"], i["status"]) for i in answer.body["invoices"]] == [
        ("A", "sale", "QUEUED"),
        ("B", "return", "QUEUED"),
    ]
    assert sorted(body["invoice"]["orderId"] for body in queued(relay)) == ["A", "B"]  # type: ignore[index]


def test_queued_message_carries_the_webhook_id_as_correlation_id(relay: RelayClient) -> None:
    relay.post(invoice_dict("A"), headers={})
    (message,) = queued(relay)
    assert str(message["correlation_id"]).startswith("msg_")
    status = relay.status("A").body
    assert status["webhookId"] == message["correlation_id"]


def test_invalid_invoice_refuses_the_whole_body_and_queues_nothing(relay: RelayClient) -> None:
    # Given an array whose third invoice has a wrong type and an unknown field
    bad = {**invoice_dict("C"), "invoiceType": "refund", "invoiceNo": "1"}
    # When posted
    answer = relay.post([invoice_dict("A"), invoice_dict("B"), bad])
    # Then 422 problem details name index and field, and nothing is queued or recorded
    assert answer.status == 422
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.body["title"] == "Invalid invoices"
    assert {(e["index"], e["field"]) for e in answer.body["errors"]} == {(2, "invoiceType"), (2, "invoiceNo")}
    assert queued(relay) == []
    assert relay.status("A").status == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status", "title"),
    [
        ("{not json", "application/json", 400, "Malformed request"),
        ('"just a string"', "application/json", 400, "Malformed request"),
        ("[]", "application/json", 422, "Invalid invoices"),
        (json.dumps(invoice_dict("A")), "text/plain", 415, "Unsupported content type"),
        (json.dumps(invoice_dict("A")), "application/x-www-form-urlencoded", 415, "Unsupported content type"),
    ],
)
def test_bad_bodies_get_a_specific_problem(
    relay: RelayClient, body: str, content_type: str, status: int, title: str
) -> None:
    answer = relay.post(body=body, content_type=content_type)
    assert (answer.status, answer.body["title"]) == (status, title)
    assert answer.body["detail"]
    assert queued(relay) == []


def test_body_over_the_limit_is_413(relay: RelayClient) -> None:
    huge = invoice_dict("A", signedInvoice="x" * 300_000)
    answer = relay.post(huge)
    assert answer.status == 413
    assert "262144" in answer.body["detail"]
    assert queued(relay) == []


def test_non_utf8_body_is_400_not_500(relay: RelayClient) -> None:
    answer = relay.post(body=b'{"orderId": "\xff"}')
    assert answer.status == 400


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h: {**h, "webhook-signature": "v1,AAAA"}, id="wrong-signature"),
        pytest.param(lambda h: {k: v for k, v in h.items() if k != "webhook-id"}, id="missing-id"),
        pytest.param(lambda h: {**h, "webhook-signature": "nonsense"}, id="malformed-signature"),
    ],
)
def test_bad_signature_is_401_and_changes_nothing(relay: RelayClient, tamper) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(invoice_dict("A"))
    answer = relay.post_unsigned(body, tamper(signed_headers(relay.secret, body)))
    assert answer.status == 401
    assert answer.body["title"] == "Signature refused"
    assert queued(relay) == []


def test_unsigned_post_is_401(relay: RelayClient) -> None:
    assert relay.post_unsigned(json.dumps(invoice_dict("A")), {}).status == 401


def test_stale_timestamp_is_401(relay: RelayClient) -> None:
    body = json.dumps(invoice_dict("A"))
    answer = relay.post_unsigned(body, signed_headers(relay.secret, body, at=time.time() - 600))
    assert answer.status == 401
    assert "5 minutes" in answer.body["detail"]


def test_rotation_accepts_old_and_new_secret_while_both_are_active(relay: RelayClient) -> None:
    # Given the operator adds a second secret next to the first
    new = new_secret()
    secrets = relay.pipeline.stack.secret_arns  # type: ignore[union-attr]
    relay.pipeline.secretsmanager().put_secret_value(
        SecretId=secrets["WebhookSigningSecret"], SecretString=json.dumps({"old": relay.secret, "new": new})
    )
    wiring.forget()  # a warm Lambda sees the change once its 5-minute secret cache runs out
    # When senders sign with either
    # Then both are accepted, and a third secret is not
    assert relay.post(invoice_dict("A")).status == 202
    assert relay.post(invoice_dict("B"), secret=new).status == 202
    assert relay.post(invoice_dict("C"), secret=new_secret()).status == 401


def test_duplicate_is_answered_with_its_state(relay: RelayClient) -> None:
    relay.post(invoice_dict("A"))
    again = relay.post(invoice_dict("A"))
    assert again.status == 202
    assert again.body["invoices"][0]["status"] == "QUEUED"


def test_different_invoice_for_a_recorded_key_is_a_409_conflict(relay: RelayClient) -> None:
    relay.post(invoice_dict("A"))
    answer = relay.post([invoice_dict("B"), invoice_dict("A", invoiceNumber="OTHER")])
    assert answer.status == 409
    assert answer.body["conflicts"] == [
        {
            "index": 1,
            "orderId": "A",
            "invoiceType": "sale",
            "status": "QUEUED",
            "recordedInvoiceNumber": "INV-A",
        }
    ]
    # all or nothing: B was not accepted either
    assert relay.status("B").status == 404


def test_status_of_an_unknown_key_is_404(relay: RelayClient) -> None:
    answer = relay.status("NEVER-SEEN")
    assert answer.status == 404
    assert answer.body["title"] == "Invoice not found"


def test_status_defaults_to_sale_and_reads_return_separately(relay: RelayClient) -> None:
    relay.post(invoice_dict("A", invoiceType="return"))
    assert relay.status("A").status == 404
    answer = relay.status("A", "return")
    assert answer.status == 200
    assert (answer.body["invoiceType"], answer.body["status"], answer.body["attempts"]) == (
        "return",
        "QUEUED",
        0,
    )


def test_status_needs_a_signature_and_a_valid_type(relay: RelayClient) -> None:
    relay.post(invoice_dict("A"))
    assert relay.status("A", signed=False).status == 401
    assert relay.status("A", "refund").status == 400


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x01\x02",
        b"[" * 5000 + b"]" * 5000,
        b'{"orderId": 1e999}',
        b'[{"orderId": null}]',
        json.dumps([invoice_dict(f"O-{n}") for n in range(101)]).encode(),
        b'{"orderId": "A", "invoiceNumber": "1", "invoiceType": "sale", "orderItems": "many"}',
    ],
)
def test_nothing_a_client_sends_causes_a_5xx(relay: RelayClient, body: bytes) -> None:
    answer = relay.post(body=body)
    assert 400 <= answer.status < 500
