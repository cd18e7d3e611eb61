"""`InvoiceLedger.accept` against in-process moto, on the table template.yaml declares."""

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from contract.drivers import TABLE, create_table
from factories import invoice
from fakes import FakeClock, RecordingQueue
from ingest_harness import CountedReads, StaleFirstRead, queued_bodies
from relay.adapters.ledger import TRANSACTION_LIMIT, InvoiceLedger
from relay.domain.errors import AcceptRaceError, ConflictError
from relay.domain.intake import Action, InvoiceAcceptance, admit
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import QueuedInvoice


@pytest.fixture
def ledger() -> Iterator[InvoiceLedger]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="ap-south-1")
        create_table(client)
        yield InvoiceLedger(TABLE, client)


def test_a_key_written_meanwhile_cancels_the_transaction_as_a_race(ledger: InvoiceLedger) -> None:
    # Given FY-1 recorded
    ledger.accept(admit([invoice("FY-1")], {}), now=1.0, correlation_id="wh-1")
    # When a request that read before that write tries to create it too
    # Then DynamoDB's ConditionalCheckFailed reason reads as a race
    with pytest.raises(AcceptRaceError):
        ledger.accept(admit([invoice("FY-2"), invoice("FY-1")], {}), now=2.0, correlation_id="wh-2")
    # And the transaction wrote nothing
    assert ledger.get(invoice("FY-2").key) is None


def test_breach_10_identical_copy_racing_on_dynamodb_is_answered_as_a_duplicate(
    ledger: InvoiceLedger,
) -> None:
    # Given an identical copy of the webhook recorded after this request read the ledger
    ledger.accept(admit([invoice("FY-1")], {}), now=1.0, correlation_id="wh-1")
    queue = RecordingQueue(FakeClock())
    acceptance = InvoiceAcceptance(ledger=StaleFirstRead(ledger), queue=queue, clock=lambda: 2.0)  # type: ignore[arg-type]
    # When this request writes
    (admission,) = acceptance.accept([invoice("FY-1")], correlation_id="wh-2")
    # Then it reads again and answers the duplicate with the entry's state, queuing nothing
    # (the first copy's message is on its way)
    assert (admission.action, admission.status) == (Action.ANSWER, InvoiceStatus.QUEUED)
    assert queued_bodies(queue) == []
    assert ledger.get(invoice("FY-1").key).correlation_id == "wh-1"  # type: ignore[union-attr]


def test_new_invoices_are_recorded_without_reading_the_ledger_first(ledger: InvoiceLedger) -> None:
    # Given an empty ledger, read through a counter
    counted, queue = CountedReads(ledger), RecordingQueue(FakeClock())
    acceptance = InvoiceAcceptance(ledger=counted, queue=queue, clock=lambda: 1.0, optimistic_limit=50)  # type: ignore[arg-type]
    # When a webhook of two new invoices is accepted
    admissions = acceptance.accept([invoice("FY-1"), invoice("FY-2")], correlation_id="wh-1")
    # Then the transaction's conditions alone proved them new: no read, both recorded and queued
    assert counted.reads == 0
    assert [admission.action for admission in admissions] == [Action.CREATE, Action.CREATE]
    assert {ledger.get(invoice(order).key).status for order in ("FY-1", "FY-2")} == {InvoiceStatus.QUEUED}  # type: ignore[union-attr]
    assert len(queued_bodies(queue)) == 2


def test_a_recorded_key_refuses_the_first_write_and_is_decided_from_one_read(ledger: InvoiceLedger) -> None:
    # Given FY-1 recorded and then invoiced
    acceptance = InvoiceAcceptance(ledger=ledger, queue=RecordingQueue(FakeClock()), clock=lambda: 1.0)
    acceptance.accept([invoice("FY-1")], correlation_id="wh-1")
    boto3.client("dynamodb", region_name="ap-south-1").update_item(  # the dispatcher's outcome
        TableName=TABLE,
        Key={"pk": {"S": str(invoice("FY-1").key)}},
        UpdateExpression="SET #s = :s REMOVE statusKey",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "INVOICED"}},
    )
    counted, queue = CountedReads(ledger), RecordingQueue(FakeClock())
    again = InvoiceAcceptance(ledger=counted, queue=queue, clock=lambda: 2.0, optimistic_limit=50)  # type: ignore[arg-type]
    # When the ERP sends FY-1 again with a new FY-2
    admissions = again.accept([invoice("FY-1"), invoice("FY-2")], correlation_id="wh-2")
    # Then the optimistic write was refused whole, one read decided both, and only FY-2 is queued
    assert counted.reads == 1
    assert [(a.action, a.status) for a in admissions] == [
        (Action.ANSWER, InvoiceStatus.INVOICED),
        (Action.CREATE, InvoiceStatus.QUEUED),
    ]
    assert [QueuedInvoice.from_body(body).invoice.orderId for body in queued_bodies(queue)] == ["FY-2"]


def test_a_webhook_above_the_optimistic_limit_is_read_before_any_body_is_written(
    ledger: InvoiceLedger,
) -> None:
    # Given 60 invoices recorded (their bodies are stored ahead of the entries: over 50)
    originals = [invoice(f"FY-{n}") for n in range(60)]
    InvoiceAcceptance(ledger=ledger, queue=RecordingQueue(FakeClock()), clock=lambda: 1.0).accept(
        originals, correlation_id="wh-1"
    )
    # When the same 60 arrive with different content, under the limit ingest is wired with
    changed = [invoice(f"FY-{n}", invoiceNumber=f"INV-X{n}") for n in range(60)]
    acceptance = InvoiceAcceptance(
        ledger=ledger,
        queue=RecordingQueue(FakeClock()),
        clock=lambda: 2.0,
        optimistic_limit=TRANSACTION_LIMIT // 2,
    )
    # Then they conflict, decided from a read before any write
    with pytest.raises(ConflictError):
        acceptance.accept(changed, correlation_id="wh-2")
    # And every stored body is still the recorded invoice, for the reconciler to queue again
    for original in originals:
        body = ledger.body(original.key)
        assert body is not None
        assert body.content_hash == ledger.get(original.key).content_hash  # type: ignore[union-attr]
