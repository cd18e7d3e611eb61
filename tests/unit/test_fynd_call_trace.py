"""Each Fynd call is an X-Ray subsegment an operator can search: its HTTP status, Fynd's codes,
the order count, and why it failed; the keys as metadata; never a body or a token."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import urllib3

from factories import invoice
from relay.adapters import fynd
from relay.adapters.fynd import Credentials, FyndClient
from relay.domain.fynd import FyndAmbiguous, FyndCall, FyndUnavailable
from relay.domain.invoice import InvoiceType

BUDGET = 30.0


class FakeSubsegment:
    def __init__(self, name: str) -> None:
        self.name = name
        self.annotations: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}

    def put_annotation(self, key: str, value: Any) -> None:
        self.annotations[key] = value

    def put_metadata(self, key: str, value: Any) -> None:
        self.metadata[key] = value


class FakeTracer:
    """Stands in for Powertools' Tracer: records the subsegments opened through its provider."""

    def __init__(self) -> None:
        self.subsegments: list[FakeSubsegment] = []
        self.provider = self

    @contextmanager
    def in_subsegment(self, name: str) -> Iterator[FakeSubsegment]:
        subsegment = FakeSubsegment(name)
        self.subsegments.append(subsegment)
        yield subsegment


class ScriptedPool:
    def __init__(self, *replies: urllib3.HTTPResponse | Exception) -> None:
        self.replies = list(replies)

    def request(self, method: str, url: str, **_: Any) -> urllib3.HTTPResponse:
        answer = self.replies.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class OneCredential:
    def for_location(self, location_code: str | None) -> Credentials:
        return Credentials("user", "password-never-traced")


def reply(status: int, body: Any) -> urllib3.HTTPResponse:
    return urllib3.HTTPResponse(body=json.dumps(body).encode(), status=status, preload_content=True)


TOKEN = reply(200, {"access_token": "token-never-traced", "expires_in": 3600})
CALL = FyndCall(None, InvoiceType.SALE, (invoice("A", signedInvoice="SIGNED"), invoice("B")))


@pytest.fixture
def tracer(monkeypatch: pytest.MonkeyPatch) -> FakeTracer:
    fake = FakeTracer()
    monkeypatch.setattr(fynd, "tracer", fake)
    return fake


def send(*replies: urllib3.HTTPResponse | Exception) -> None:
    client = FyndClient("https://fynd.test", OneCredential(), http=ScriptedPool(TOKEN, *replies))  # type: ignore[arg-type]
    client.update_invoices(CALL, time_budget_seconds=BUDGET)


def test_an_answered_call_is_annotated_with_status_codes_and_orders(tracer: FakeTracer) -> None:
    # Given Fynd invoices A and answers IN453 for B
    answer = {
        "status": "PARTIAL",
        "payloadCount": 2,
        "successCount": 1,
        "failedCount": 1,
        "errors": [{"orderId": "B", "code": "IN453", "message": "x"}],
    }
    # When the call is made
    send(reply(200, answer))
    # Then its one subsegment carries the searchable facts, and the keys as metadata
    (subsegment,) = tracer.subsegments
    assert subsegment.name == "## Fynd Update Invoice"
    assert subsegment.annotations == {
        "fynd_orders": "2",
        "fynd_status": "200",
        "fynd_result": "PARTIAL",
        "fynd_codes": "IN453",
    }
    assert subsegment.metadata == {"invoice_keys": ["A#sale", "B#sale"]}
    assert "never-traced" not in repr(vars(subsegment))
    assert "SIGNED" not in repr(vars(subsegment))


def test_a_refused_call_is_annotated_with_its_status_and_failure(tracer: FakeTracer) -> None:
    with pytest.raises(FyndUnavailable):
        send(reply(503, {"title": "down"}))
    (subsegment,) = tracer.subsegments
    assert subsegment.annotations["fynd_status"] == "503"
    assert subsegment.annotations["fynd_failure"] == "fynd_unavailable"


def test_a_call_without_an_answer_is_annotated_with_its_failure(tracer: FakeTracer) -> None:
    with pytest.raises(FyndAmbiguous):
        send(urllib3.exceptions.ProtocolError("connection dropped"))
    (subsegment,) = tracer.subsegments
    assert subsegment.annotations == {"fynd_orders": "2", "fynd_failure": "fynd_ambiguous"}
