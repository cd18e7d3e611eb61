"""`InvoiceLedger.accept` against in-process moto, on the table template.yaml declares."""

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from factories import invoice
from fakes import FakeClock, RecordingQueue
from ingest_harness import StaleFirstRead, queued_bodies
from relay.adapters.ledger import InvoiceLedger
from relay.domain.errors import AcceptRaceError
from relay.domain.intake import InvoiceAcceptance, admit
from relay.domain.ledger import InvoiceStatus
from relay_local.stack import load_template


@pytest.fixture
def ledger() -> Iterator[InvoiceLedger]:
    table = load_template()["Resources"]["InvoiceLedgerTable"]["Properties"]
    with mock_aws():
        client = boto3.client("dynamodb", region_name="ap-south-1")
        client.create_table(
            TableName="InvoiceLedger",
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            BillingMode=table["BillingMode"],
            **(
                {"GlobalSecondaryIndexes": table["GlobalSecondaryIndexes"]}
                if "GlobalSecondaryIndexes" in table
                else {}
            ),
        )
        yield InvoiceLedger("InvoiceLedger", client)


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
    # Then it reads again and answers the duplicate with the entry's state, queued once more
    assert admission.status is InvoiceStatus.QUEUED
    assert len(queued_bodies(queue)) == 1
    assert ledger.get(invoice("FY-1").key).correlation_id == "wh-1"  # type: ignore[union-attr]
