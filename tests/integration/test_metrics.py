"""The relay's CloudWatch metrics as its functions print them (EMF), on every path through the
whole relay: names, dimensions and values exactly as the template's alarms and dashboard
read them."""

import json
import time
from collections.abc import Iterator

import pytest
from aws_lambda_powertools.metrics.provider import cold_start
from aws_lambda_powertools.utilities import parameters

from factories import invoice_dict
from function_output import SERVICE, FunctionOutput
from relay.domain.messages import QueuedInvoice
from relay.wiring import ledger
from relay_client import RelayClient
from relay_local.signing import new_secret
from relay_local.stack import load_template

NAMESPACE = load_template()["Parameters"]["MetricsNamespace"]["Default"]
OUTCOMES = {
    "InvoicesInvoiced",
    "AlreadyInvoiced",
    "InvoicesRejected",
    "Retries",
    "DeadLettered",
    "IngestRefused",
    "IngestErrors",
    "DuplicatesSuppressed",
    "Conflicts",
    "TokenFailures",
    "MalformedMessages",
}


def relay_with(
    *,
    environment: dict[str, str] | None = None,
    parameters: dict[str, str] | None = None,
    consume: bool = True,
) -> pytest.MarkDecorator:
    """The relay fixture with these overrides; batches gathered for 1 s, not 2, to keep tests quick."""
    config = {
        "environment": environment or {},
        "parameters": {"DispatchBatchingWindowSeconds": "1", **(parameters or {})},
        "consume": consume,
    }
    return pytest.mark.parametrize("pipeline_config", [config], indirect=True, ids=["relay"])


@pytest.fixture
def emf(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FunctionOutput]:
    with FunctionOutput.capture(capsys, monkeypatch) as output:
        yield output


@relay_with()
def test_an_invoiced_invoice_counts_received_queued_invoiced_and_the_fynd_call(
    relay: RelayClient, emf: FunctionOutput
) -> None:
    # Given a fresh execution environment and a confirmed order
    cold_start.is_cold_start = True
    # When its invoice is posted and delivered
    relay.post(invoice_dict("A"))
    relay.settle("A")
    # Then received, queued and invoiced are counted once each, under the service dimension only
    assert emf.total("InvoicesReceived") == 1
    assert emf.total("InvoicesQueued") == 1
    assert emf.total("InvoicesInvoiced") == 1
    # And the Fynd call is measured: one order, a latency in milliseconds, one token fetched
    assert emf.values("OrdersPerCall") == [1.0]
    (latency,) = emf.named("FyndCallLatency")
    assert (latency.unit, latency.dimensions, len(latency.values)) == (
        "Milliseconds",
        {"service": SERVICE},
        1,
    )
    assert latency.values[0] > 0
    assert emf.total("TokenRefreshes", reason="fetched") == 1
    # And the cold start is counted per function
    assert emf.total("ColdStart", function_name="IngestFunction") == 1
    # And nothing else happened, and everything went to the template's namespace
    assert emf.names() & OUTCOMES == {"InvoicesInvoiced"}
    assert {metric.namespace for metric in emf.metrics()} == {NAMESPACE}


@relay_with()
def test_each_fynd_code_is_counted_under_its_outcome(relay: RelayClient, emf: FunctionOutput) -> None:
    # Given orders Fynd answers IN401, IN400, IN422 and IN453
    order_ids = ["CANCELLED-1", "UNKNOWN-1", "BADINV-1", "INVOICED-1"]
    # When they are delivered in one call
    relay.post([invoice_dict(order_id) for order_id in order_ids])
    relay.settle(*order_ids)
    # Then each rejection is counted under its code, and only under {code, service}
    assert emf.total("InvoicesRejected", code="IN401") == 1
    assert emf.total("InvoicesRejected", code="IN400") == 1
    assert emf.total("InvoicesRejected", code="IN422") == 1
    assert {frozenset(metric.dimensions) for metric in emf.named("InvoicesRejected")} == {
        frozenset({"code", "service"})
    }
    # And IN453 is invoiced, and counted as a duplicate that reached Fynd
    assert emf.total("InvoicesInvoiced") == 1
    assert emf.total("AlreadyInvoiced") == 1
    assert emf.values("OrdersPerCall") == [4.0]
    assert "Retries" not in emf.names()


@relay_with(consume=False, environment={"TOO_EARLY_DEADLINE_SECONDS": "5"})
def test_too_early_is_counted_as_a_retry_then_as_rejected_past_the_deadline(
    relay: RelayClient, emf: FunctionOutput
) -> None:
    # Given an order Fynd never confirms, and a 5-second deadline
    relay.simulator.state.configure_order("NEVER-CONFIRMED", "pending")
    relay.post(invoice_dict("NEVER-CONFIRMED"))
    (record,) = relay.receive(1)
    # When it is answered IN403 before the deadline, and again after it
    relay.dispatch(record)
    assert emf.total("Retries", reason="IN403") == 1
    time.sleep(5.1)
    relay.dispatch(record)
    # Then the first answer is a retry, and the last a rejection under the deadline's own code
    assert emf.total("Retries", reason="IN403") == 1
    assert emf.total("InvoicesRejected", code="IN403_DEADLINE") == 1
    assert relay.status("NEVER-CONFIRMED").body["status"] == "REJECTED"


@relay_with(consume=False)
def test_outages_and_throttling_are_counted_as_retries_by_reason(
    relay: RelayClient, emf: FunctionOutput
) -> None:
    # Given Fynd answers 503, then 429, then works
    relay.simulator.state.add_faults(
        [{"kind": "status", "status": 503}, {"kind": "status", "status": 429, "retry_after": 1}]
    )
    relay.post(invoice_dict("A"))
    (record,) = relay.receive(1)
    # When the invoice is received three times, each when its back-off has passed
    for _ in range(3):
        relay.wait_until_due("A")
        relay.dispatch(record)
    # Then each failed attempt is a retry named by its reason, and the third is invoiced
    assert emf.total("Retries", reason="fynd_unavailable") == 1
    assert emf.total("Retries", reason="fynd_throttled") == 1
    assert emf.total("InvoicesInvoiced") == 1
    assert "DeadLettered" not in emf.names()


@relay_with(consume=False)
def test_duplicates_are_counted_where_they_are_suppressed(relay: RelayClient, emf: FunctionOutput) -> None:
    # Given the ERP sent one invoice twice before it was dispatched: the second queues nothing
    relay.post(invoice_dict("A"))
    relay.post(invoice_dict("A"))
    assert emf.total("InvoicesQueued") == 1
    # And a second message of it (the reconciler's, say)
    relay.queue_again("A")
    first, second = relay.receive(2)
    # When both messages arrive in one batch, then the first comes again in a later batch
    relay.dispatch(first, second)
    relay.dispatch(first)
    # And the ERP sends it a third time, after it was invoiced
    assert relay.post(invoice_dict("A")).body["invoices"][0]["status"] == "INVOICED"
    # Then each stage counted the copies it stopped, and Fynd invoiced it once
    assert emf.total("DuplicatesSuppressed", stage="batch") == 1
    assert emf.total("DuplicatesSuppressed", stage="ledger") == 1
    assert emf.total("DuplicatesSuppressed", stage="ingest") == 2
    assert emf.total("InvoicesQueued") == 1
    assert emf.total("InvoicesInvoiced") == 1


@relay_with(consume=False, parameters={"MaxBodyBytes": "1024"})
def test_refusals_at_ingest_are_counted_by_reason(relay: RelayClient, emf: FunctionOutput) -> None:
    # Given an invoice already queued for order A
    assert relay.post(invoice_dict("A")).status == 202
    # When webhooks are refused for each reason
    answers = {
        "signature": relay.post(invoice_dict("B"), secret=new_secret()),
        "media_type": relay.post(invoice_dict("B"), content_type="text/plain"),
        "too_large": relay.post(invoice_dict("B", signedInvoice="x" * 2000)),
        "malformed": relay.post(body="{not json"),
        "invalid": relay.post({"orderId": "B", "invoiceType": "sale"}),
        "conflict": relay.post(invoice_dict("A", invoiceNumber="INV-OTHER")),
    }
    assert {reason: answer.status for reason, answer in answers.items()} == {
        "signature": 401,
        "media_type": 415,
        "too_large": 413,
        "malformed": 400,
        "invalid": 422,
        "conflict": 409,
    }
    # Then each refusal is counted once under its reason
    for reason in answers:
        assert emf.total("IngestRefused", reason=reason) == 1, reason
    assert {frozenset(metric.dimensions) for metric in emf.named("IngestRefused")} == {
        frozenset({"reason", "service"})
    }
    # And the conflict is counted as one; only A and the conflicting invoice passed validation
    assert emf.total("Conflicts") == 1
    assert emf.total("InvoicesReceived") == 2
    assert emf.total("InvoicesQueued") == 1


@relay_with(consume=False)
def test_an_ingest_failure_on_our_side_is_counted_by_kind(relay: RelayClient, emf: FunctionOutput) -> None:
    # Given the invoice queue is gone
    stack = relay.pipeline.stack
    assert stack is not None
    relay.pipeline.sqs().delete_queue(QueueUrl=stack.queue_url)
    # When an ERP posts an invoice
    answer = relay.post(invoice_dict("A"), resend_5xx=False)
    # Then it is asked to retry, and the failure is counted by its kind, not as a refusal
    assert answer.status == 503
    assert emf.total("IngestErrors", kind="QueueUnavailableError") == 1
    assert "IngestRefused" not in emf.names()


@relay_with()
def test_token_refreshes_and_failures_are_counted(relay: RelayClient, emf: FunctionOutput) -> None:
    # Given the relay fetched a token for its first invoice
    relay.post(invoice_dict("A"))
    relay.settle("A")
    assert emf.total("TokenRefreshes", reason="fetched") == 1
    # When Fynd stops accepting it, and the token endpoint refuses the next request once
    relay.simulator.state.expire_tokens()
    relay.simulator.state.add_faults([{"kind": "status", "status": 401, "endpoint": "token"}])
    relay.post(invoice_dict("B"))
    relay.settle("B")
    # Then the refusal, the failed fetch and the retry are counted, and the next fetch works
    assert emf.total("TokenRefreshes", reason="rejected") == 1
    assert emf.total("TokenFailures") == 1
    assert emf.total("Retries", reason="fynd_auth") == 1
    assert emf.total("TokenRefreshes", reason="fetched") == 2
    # When the credentials secret is replaced by something that is not credentials
    arns = relay.pipeline.stack.secret_arns  # type: ignore[union-attr]
    relay.pipeline.secretsmanager().put_secret_value(
        SecretId=arns["FyndCredentialsSecret"], SecretString=json.dumps({"username": "only"})
    )
    parameters.clear_caches()  # type: ignore[no-untyped-call]  # the 5-minute cache, skipped
    relay.post(invoice_dict("C"))
    for _ in range(50):
        if (relay.status("C").body.get("lastError") or {}).get("code") == "fynd_auth":
            break
        time.sleep(0.2)
    # Then that is a token failure too
    assert emf.total("TokenFailures") == 2


@relay_with(consume=False)
def test_dead_lettering_is_counted_once_by_reason_on_the_last_receive(
    relay: RelayClient, emf: FunctionOutput
) -> None:
    stack = relay.pipeline.stack
    assert stack is not None
    last_receive = int(stack.parameters["MaxReceiveCount"])
    # Given an invoice Fynd answers 503 to, received twice: once early, once for the last time
    relay.simulator.state.add_faults([{"kind": "status", "status": 503}] * 2)
    relay.post(invoice_dict("A"))
    (failing,) = relay.receive(1)
    relay.dispatch(failing, receive_count=1)
    relay.wait_until_due("A")
    relay.dispatch(failing, receive_count=last_receive)
    # Then the first is a retry and the last is dead-lettered, under the failure's reason
    assert emf.total("Retries", reason="fynd_unavailable") == 1
    assert emf.total("DeadLettered", reason="fynd_unavailable") == 1
    # Given a message that is not a queued invoice, received early and then for the last time
    relay.pipeline.sqs().send_message(QueueUrl=stack.queue_url, MessageBody="not an invoice")
    (unreadable,) = relay.receive(1)
    relay.dispatch(unreadable, receive_count=1)
    relay.dispatch(unreadable, receive_count=last_receive)
    # Then it is counted unreadable twice, and dead-lettered once
    assert emf.total("MalformedMessages") == 2
    assert emf.total("DeadLettered", reason="malformed") == 1
    # Given a copy of an invoice another worker is sending, received for the last time
    relay.post(invoice_dict("B"))
    (held,) = relay.receive(1)
    claim = ledger().claim(
        QueuedInvoice.from_body(held["body"]),
        message_id="another-message",
        owner="another-worker",
        now=time.time(),
        lease_seconds=60,
    )
    assert claim.granted
    relay.dispatch(held, receive_count=last_receive)
    # Then the copy is queued afresh to wait for the lease (it may be the invoice's only
    # message), never dead-lettered
    assert emf.total("DeadLettered", reason="waiting") == 0
    assert emf.total("Retries", reason="waiting") == 1
    assert {frozenset(metric.dimensions) for metric in emf.named("DeadLettered")} == {
        frozenset({"reason", "service"})
    }
