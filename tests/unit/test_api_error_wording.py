"""What a refused request is told: enough to find the fault, and only what is true of it.

Through the real `relay.api.app` over in-memory fakes (`ingest_harness`)."""

from collections.abc import Iterator

import pytest

from ingest_harness import Ingest, ingest_in_process


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    with ingest_in_process() as running:
        yield running


def test_a_status_get_for_a_malformed_order_id_speaks_of_the_lookup_not_of_a_queue(ingest: Ingest) -> None:
    # Given a signed status GET whose order id breaks the orderId rule
    # When it is asked
    answer = ingest.get("FY%201", "invoiceType=sale")
    # Then it is a 422 naming the field, worded for a read: nothing is ever queued by a GET
    assert answer.status == 422
    assert answer.body["errors"][0]["field"] == "orderId"
    assert "queued" not in answer.body["detail"]
    assert "order id" in answer.body["detail"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"orderId": "FY-1",\n "invoiceNumber": "INV-1"\n "invoiceType": "sale"}', "line 3, column 2"),
        ('[{"orderId": "FY-1"}', "line 1, column 21"),
    ],
)
def test_invalid_json_is_answered_with_its_line_and_column(ingest: Ingest, body: str, where: str) -> None:
    # Given a correctly signed body that is not JSON
    # When it is posted
    answer = ingest.post(body)
    # Then the 400 says where the JSON breaks, without echoing the body
    assert answer.status == 400
    assert where in answer.body["detail"]
    assert "FY-1" not in answer.body["detail"]
