"""Issue 12, ingest side: one regression test per breach, each failing on the code before it.

The API tests resolve API Gateway events with the real `relay.api.app`, in this process, over
in-memory fakes of the ledger and the queue (`ingest_harness`)."""

import base64
import json
import secrets
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError

from factories import invoice, invoice_dict
from fakes import FakeClock, InMemoryLedger, RecordingQueue
from ingest_harness import Ingest, StaleFirstRead, ingest_in_process, queued_bodies
from relay.adapters.ledger import InvoiceLedger
from relay.domain.errors import AcceptRaceError, LedgerUnavailableError
from relay.domain.intake import InvoiceAcceptance
from relay.domain.invoice import Invoice
from relay.domain.ledger import InvoiceStatus
from relay.domain.standard_webhooks import request_line

SALE = {"orderId": "FY-1", "invoiceNumber": "INV-1", "invoiceType": "sale"}


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    with ingest_in_process() as running:
        yield running


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def body_with_packages(packages: str) -> str:
    return json.dumps(SALE)[:-1] + f', "packages": {packages}}}'


# ---- breach 3: an accepted invoice the queue message cannot carry ----


@pytest.mark.parametrize("depth", [17, 198, 255])
def test_packages_nested_past_the_cap_answer_422_and_write_nothing(ingest: Ingest, depth: int) -> None:
    # Given an invoice whose packages nest `depth` levels (198-255 passed the model and broke the parser)
    body = json.dumps({**SALE, "packages": [{"dims": nested(depth)}]})
    # When it is posted, correctly signed
    answer = ingest.post(body)
    # Then it is refused as invalid, naming the field, and nothing is recorded or queued
    assert answer.status == 422
    assert answer.body["errors"][0]["field"].startswith("packages.0.dims")
    assert (ingest.ledger.entries, queued_bodies(ingest.queue)) == ({}, [])


def test_packages_within_the_nesting_cap_are_accepted_and_carried_unchanged(ingest: Ingest) -> None:
    # Given packages nested as deep as the cap allows (the invoice object is level 1)
    packages = [{"dims": nested(13)}]
    # When posted
    answer = ingest.post(json.dumps({**SALE, "packages": packages}))
    # Then it is accepted and the queued message carries exactly those packages
    assert answer.status == 202
    (body,) = queued_bodies(ingest.queue)
    assert json.loads(body)["invoice"]["packages"] == packages


@pytest.mark.parametrize(
    "packages",
    [
        [{"dims": nested(230)}],  # past the queue parser's depth limit
        [{"blob": "x" * 262_144}],  # larger than one SQS message
    ],
)
def test_a_message_that_would_not_round_trip_is_refused_before_the_ledger_write(
    packages: list[dict[str, Any]],
) -> None:
    # Given an invoice the model takes but one queue message could not carry back unchanged
    unreadable = Invoice.model_validate({**SALE, "packages": packages})
    clock = FakeClock()
    ledger, queue = InMemoryLedger(clock), RecordingQueue(clock)
    acceptance = InvoiceAcceptance(ledger=ledger, queue=queue, clock=clock)
    # When acceptance is asked to take it
    with pytest.raises(Exception, match="cannot be queued") as refused:
        acceptance.accept([unreadable], correlation_id="wh-1")
    # Then it is refused as the sender's problem, before anything was written
    assert type(refused.value).__name__ == "UnqueueableInvoices"
    assert (ledger.entries, queued_bodies(queue)) == ({}, [])


# ---- breach 4: signed input that got a 5xx ----


def test_top_level_nesting_answers_400(ingest: Ingest) -> None:
    # Given a correctly signed body of 20,000 nested arrays
    body = "[" * 20_000 + "]" * 20_000
    # When posted
    answer = ingest.post(body)
    # Then it is a 400 problem, not a RecursionError
    assert answer.status == 400
    assert answer.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("depth", [256, 400, 900])
def test_deep_packages_answer_422_not_a_hashing_error(ingest: Ingest, depth: int) -> None:
    # Given packages nested `depth` levels (content hashing raised at 256 and more)
    body = body_with_packages('[{"dims": ' + "[" * depth + "]" * depth + "}]")
    # When posted
    answer = ingest.post(body)
    # Then 422, decided before anything was written
    assert answer.status == 422
    assert (ingest.ledger.entries, queued_bodies(ingest.queue)) == ({}, [])


@pytest.mark.parametrize(
    "packages",
    ['[{"note": "\\ud83d"}]', '[{"\\udc00": 1}]', '[{"deep": [[["a\\ud800b"]]]}]'],
)
def test_lone_surrogate_in_packages_answers_422_before_any_write(ingest: Ingest, packages: str) -> None:
    # Given packages holding a lone surrogate escape (valid JSON, not valid Unicode)
    body = body_with_packages(packages)
    # When posted twice, as a retrying ERP would
    answers = [ingest.post(body), ingest.post(body)]
    # Then both are 422 (not a 500 after the ledger write), and nothing is recorded or queued
    assert [answer.status for answer in answers] == [422, 422]
    assert (ingest.ledger.entries, queued_bodies(ingest.queue)) == ({}, [])


@pytest.mark.parametrize("field", ["invoiceNumber", "ackDate"])
def test_lone_surrogate_in_a_plain_text_field_answers_422(ingest: Ingest, field: str) -> None:
    # Given a lone surrogate in a plain text field
    body = json.dumps(SALE)[:-1] + f', "{field}": "A\\ud83d"}}'
    if field == "invoiceNumber":
        body = body.replace('"invoiceNumber": "INV-1", ', "")
    # When posted, Then 422 and nothing written
    assert ingest.post(body).status == 422
    assert ingest.ledger.entries == {}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_breach_04_non_standard_numbers_answer_400(ingest: Ingest, literal: str) -> None:
    # Given packages with a number JSON does not have (or one beyond a float)
    answer = ingest.post(body_with_packages(f'[{{"weight": {literal}}}]'))
    # Then 400: the queue message could not carry it unchanged
    assert answer.status == 400
    assert ingest.ledger.entries == {}


# ---- breach 9: Secrets Manager errors ----


class FailingSecrets:
    """A Powertools secrets provider whose Secrets Manager is unreachable."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get(self, name: str, **_: Any) -> str:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        GetParameterError("An error occurred (ThrottlingException) when calling GetSecretValue"),
        ClientError({"Error": {"Code": "InternalServiceError", "Message": "x"}}, "GetSecretValue"),
    ],
)
def test_breach_09_unreadable_secret_is_a_typed_secret_unavailable_error(error: Exception) -> None:
    from relay.adapters.secrets import SecretUnavailableError, read_json_secret

    # Given Secrets Manager failing
    # When a secret is read
    # Then the adapter raises its own type, naming the secret and never a value
    with pytest.raises(SecretUnavailableError, match="WebhookSigningSecret"):
        read_json_secret("WebhookSigningSecret", FailingSecrets(error))  # type: ignore[arg-type]


def test_ingest_answers_503_with_retry_after_when_the_signing_secret_is_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from relay import wiring

    failing = FailingSecrets(GetParameterError("An error occurred (ThrottlingException)"))
    # Given the real verifier factory, over a Secrets Manager that fails (patched before the
    # harness, so each is undone in reverse order and nothing leaks into later tests)
    monkeypatch.setattr(wiring, "_ingest_secrets", lambda: failing)
    with ingest_in_process() as ingest:
        monkeypatch.setattr(wiring, "webhook_verifier", _real_verifier)
        monkeypatch.setattr(wiring, "request_verifier", _real_request_verifier)
        try:
            # When a signed invoice is posted
            answer = ingest.post(json.dumps(SALE))
        finally:
            monkeypatch.undo()
    # Then 503 with Retry-After: our trouble, not the sender's
    assert answer.status == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert wiring.webhook_verifier is _real_verifier


_real_verifier = __import__("relay.wiring", fromlist=["webhook_verifier"]).webhook_verifier
_real_request_verifier = __import__("relay.wiring", fromlist=["request_verifier"]).request_verifier


def test_unreadable_fynd_credentials_are_fynd_unavailable() -> None:
    from relay.adapters.secrets import SecretsCredentials
    from relay.domain.fynd import FyndUnavailable

    # Given Fynd credentials behind a Secrets Manager that fails
    credentials = SecretsCredentials(
        "FyndCredentials",
        "FyndLocationCredentials",
        FailingSecrets(GetParameterError("throttled")),  # type: ignore[arg-type]
    )
    # When the dispatcher asks for a location's credentials
    # Then it learns Fynd is unavailable (nothing was sent; the call is retried)
    with pytest.raises(FyndUnavailable):
        credentials.for_location("BLR-1")


# ---- breach 10: every cancelled transaction answered 409 ----


def test_identical_copy_winning_the_race_is_a_duplicate_answered_202() -> None:
    clock = FakeClock()
    ledger = InMemoryLedger(clock)
    # Given an identical copy of the webhook recorded between our read and our write
    _accept_elsewhere(ledger, SALE)
    with ingest_in_process(StaleFirstRead(ledger), clock=clock) as ingest:
        # When ours is posted
        answer = ingest.post(json.dumps(SALE))
    # Then it is a duplicate, answered 202 with the entry's state, not a 409
    assert answer.status == 202
    assert answer.body["invoices"][0]["status"] == "QUEUED"


def test_race_lost_to_different_content_is_still_a_409() -> None:
    clock = FakeClock()
    ledger = InMemoryLedger(clock)
    # Given a different invoice for the same key recorded between our read and our write
    _accept_elsewhere(ledger, {**SALE, "invoiceNumber": "OTHER"})
    with ingest_in_process(StaleFirstRead(ledger), clock=clock) as ingest:
        # When ours is posted
        answer = ingest.post(json.dumps(SALE))
    # Then 409: a conflict
    assert answer.status == 409


def test_breach_10_a_race_that_never_settles_is_503_not_409(ingest: Ingest) -> None:
    # Given a ledger whose writes keep being cancelled by failed conditions
    ingest.faults.fail("ledger.accept", AcceptRaceError("changed"), times=None)
    # When posted
    answer = ingest.post(json.dumps(SALE))
    # Then 503 with Retry-After: nothing says the content differs
    assert answer.status == 503
    assert "Retry-After" in answer.headers


class CancellingDynamoDB:
    """TransactWriteItems cancelled with the given per-item reasons."""

    def __init__(self, *codes: str) -> None:
        self.codes = codes

    def transact_write_items(self, **_: Any) -> None:
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                "CancellationReasons": [{"Code": code} for code in self.codes],
            },  # type: ignore[typeddict-unknown-key]
            "TransactWriteItems",
        )


def _admissions() -> Any:
    from relay.domain.intake import admit

    return admit([invoice("FY-1"), invoice("FY-2")], {})


@pytest.mark.parametrize(
    "codes",
    [("None", "ThrottlingError"), ("TransactionConflict", "None"), ("ProvisionedThroughputExceeded",)],
)
def test_throttled_or_conflicting_transaction_is_unavailable(codes: tuple[str, ...]) -> None:
    ledger = InvoiceLedger("InvoiceLedger", CancellingDynamoDB(*codes))  # type: ignore[arg-type]
    # When DynamoDB cancels the accept transaction for throttling or a conflicting transaction
    # Then the ledger says it is unavailable (503, retry), not that a key changed (409)
    with pytest.raises(LedgerUnavailableError):
        ledger.accept(_admissions(), now=1.0, correlation_id=None)


def test_failed_condition_in_the_cancellation_reasons_is_a_race_to_decide_again() -> None:
    ledger = InvoiceLedger("InvoiceLedger", CancellingDynamoDB("None", "ConditionalCheckFailed"))  # type: ignore[arg-type]
    with pytest.raises(AcceptRaceError):
        ledger.accept(_admissions(), now=1.0, correlation_id=None)


def test_ledger_unavailable_answers_503_with_retry_after(ingest: Ingest) -> None:
    # Given the ledger write cancelled for throttling
    ingest.faults.fail(
        "ledger.accept", LedgerUnavailableError("invoice ledger cancelled the write (ThrottlingError)")
    )
    # When posted, Then 503 with Retry-After
    answer = ingest.post(json.dumps(SALE))
    assert (answer.status, "Retry-After" in answer.headers) == (503, True)


def _accept_elsewhere(ledger: InMemoryLedger, document: dict[str, Any]) -> None:
    from relay.domain.intake import admit

    ledger.accept(admit([Invoice.model_validate(document)], {}), now=1.0, correlation_id="wh-other")


# ---- breach 12: a status signature over an empty body ----


def _recorded(ingest: Ingest, *order_ids: str) -> None:
    for order_id in order_ids:
        assert ingest.post(json.dumps({**SALE, "orderId": order_id})).status == 202


def test_breach_12_status_signed_over_its_request_line_is_answered(ingest: Ingest) -> None:
    _recorded(ingest, "FY-1")
    # When the GET is signed over "GET /v1/invoices/FY-1?invoiceType=sale"
    answer = ingest.get("FY-1", "invoiceType=sale")
    # Then it is answered
    assert (answer.status, answer.body["status"]) == (200, "QUEUED")


@pytest.mark.parametrize("order_id", ["FY-1", "FY-2"])
def test_status_signed_over_an_empty_body_is_refused(ingest: Ingest, order_id: str) -> None:
    _recorded(ingest, "FY-1", "FY-2")
    # Given a GET signed the old way, over an empty body (one captured signature read every order)
    answer = ingest.get(order_id, "invoiceType=sale", signed_content="")
    # Then 401, whichever order it asks for
    assert answer.status == 401


@pytest.mark.parametrize(
    ("signed_path", "signed_query"),
    [("/v1/invoices/FY-1", "invoiceType=sale"), ("/v1/invoices/FY-2", "invoiceType=return")],
)
def test_a_captured_status_signature_reads_no_other_request(
    ingest: Ingest, signed_path: str, signed_query: str
) -> None:
    _recorded(ingest, "FY-1", "FY-2")
    # Given a signature captured from another status request
    # When it is replayed on GET /v1/invoices/FY-2?invoiceType=sale
    answer = ingest.get(
        "FY-2", "invoiceType=sale", signed_content=request_line("GET", signed_path, signed_query)
    )
    # Then 401
    assert answer.status == 401


# ---- breach 13: order ids that need percent-encoding ----


@pytest.mark.parametrize(
    "order_id",
    [
        "FY-é",
        "FY/1",
        "FY%41",
        "FY?1",
        "FY#1",
        "FY+1",
        "-FY1",
        "FY:1",
        unicodedata.normalize("NFD", "FYé"),
    ],
)
def test_order_id_outside_the_documented_set_is_422(ingest: Ingest, order_id: str) -> None:
    # When an invoice with that orderId is posted
    answer = ingest.post(json.dumps({**SALE, "orderId": order_id}))
    # Then 422 naming orderId, and nothing written
    assert answer.status == 422
    assert answer.body["errors"][0]["field"] == "orderId"
    assert ingest.ledger.entries == {}


@pytest.mark.parametrize("location", ["BLR/1", "BLRé", "BLR#1"])
def test_breach_13_location_code_outside_the_documented_set_is_422(ingest: Ingest, location: str) -> None:
    answer = ingest.post(json.dumps({**SALE, "locationCode": location}))
    assert (answer.status, answer.body["errors"][0]["field"]) == (422, "locationCode")


def test_breach_13_status_path_is_percent_decoded_once_like_everywhere(ingest: Ingest) -> None:
    # Given FY-1.a_b recorded
    _recorded(ingest, "FY-1.a_b")
    # When read with its characters percent-encoded in the path (as some clients do)
    answer = ingest.get("FY%2D1%2Ea%5Fb")
    # Then it is the same key
    assert (answer.status, answer.body["orderId"]) == (200, "FY-1.a_b")


@pytest.mark.parametrize("segment", ["FY%C3%A9", "FY%2F1", "FY%25", "%FF"])
def test_breach_13_status_of_an_id_outside_the_set_is_422(ingest: Ingest, segment: str) -> None:
    answer = ingest.get(segment)
    assert (answer.status, answer.body["errors"][0]["field"]) == (422, "orderId")


# ---- breach 16a: the queue message's format ----


PREVIOUS_FORMAT = json.loads(
    (__import__("pathlib").Path(__file__).parents[1] / "fixtures" / "queued_invoice_v1.json").read_text()
)["bodies"]


@pytest.mark.parametrize("body", PREVIOUS_FORMAT)
def test_messages_written_by_the_previous_format_are_read(body: str) -> None:
    from relay.domain.messages import QueuedInvoice

    # Given a body today's main wrote (no schema version)
    # When the dispatcher reads it
    message = QueuedInvoice.from_body(body)
    # Then it is format 1, with the invoice and its hash intact
    assert message.schema_version == 1
    assert message.invoice.content_hash() == message.content_hash
    assert message.invoice == Invoice.model_validate(json.loads(body)["invoice"])


def test_breach_16a_a_message_written_now_carries_its_version_and_reads_back() -> None:
    from relay.domain.messages import MESSAGE_SCHEMA_VERSION, QueuedInvoice

    sent = QueuedInvoice(invoice=invoice(), content_hash="h", accepted_at=1.0, correlation_id="wh")
    body = json.loads(sent.to_body())
    assert body["schema_version"] == MESSAGE_SCHEMA_VERSION == 2
    assert QueuedInvoice.from_body(sent.to_body()) == sent


def test_fields_of_a_later_format_are_ignored_on_read() -> None:
    from relay.domain.messages import QueuedInvoice

    # Given a body from a later deploy: a higher version and an envelope field we do not know
    later = json.loads(PREVIOUS_FORMAT[0]) | {"schema_version": 3, "priority": "high"}
    # When read by this code, Then it is read, not dead-lettered
    message = QueuedInvoice.from_body(json.dumps(later))
    assert (message.schema_version, message.invoice.orderId) == (3, "FY-10001")


# ---- breach 16c and 16d: signature header and secret ----


def test_a_malformed_first_signature_does_not_hide_a_valid_second() -> None:
    from relay.domain.standard_webhooks import WebhookVerifier
    from relay_local.signing import new_secret, signed_headers

    secret = new_secret()
    headers = signed_headers(secret, "{}")
    for garbage in ("garbage", "v1", "v1,@@@", "v2,abc,def"):
        # Given a header whose first entry is malformed and whose second is valid
        headers_with = {**headers, "webhook-signature": f"{garbage} {headers['webhook-signature']}"}
        # Then it verifies
        WebhookVerifier([secret]).verify("{}", headers_with)


@pytest.mark.parametrize("size", [1, 16, 23])
def test_breach_16d_a_secret_shorter_than_24_bytes_is_unusable(size: int) -> None:
    from relay.domain.standard_webhooks import SigningSecretMissing, WebhookVerifier

    short = "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode()
    # Given only a short secret configured, Then no sender can be verified
    with pytest.raises(SigningSecretMissing):
        WebhookVerifier([short])


def test_breach_16d_a_short_secret_beside_a_good_one_verifies_nothing() -> None:
    from relay.domain.standard_webhooks import SignatureRefused, WebhookVerifier
    from relay_local.signing import new_secret, signed_headers

    short = "whsec_" + base64.b64encode(b"x").decode()
    verifier = WebhookVerifier([short, new_secret()])
    with pytest.raises(SignatureRefused):
        verifier.verify("{}", signed_headers(short, "{}"))


def test_the_local_tools_refuse_a_short_secret() -> None:
    from relay_local.signing import check_secret

    with pytest.raises(ValueError, match="24 bytes"):
        check_secret("whsec_" + base64.b64encode(b"short").decode())


def test_statuses_reach_the_answer_unchanged(ingest: Ingest) -> None:
    # A duplicate of an invoiced entry is answered INVOICED (the rule breach 10 re-admits into)
    ingest.ledger.entries[invoice("FY-1").key] = _entry_with(InvoiceStatus.INVOICED)
    answer = ingest.post(json.dumps(invoice_dict("FY-1")))
    assert (answer.status, answer.body["invoices"][0]["status"]) == (202, "INVOICED")


def _entry_with(status: InvoiceStatus) -> Any:
    from relay.domain.ledger import LedgerEntry

    sent = invoice("FY-1")
    return LedgerEntry(
        key=sent.key,
        status=status,
        content_hash=sent.content_hash(),
        invoice_number=sent.invoiceNumber,
        attempts=1,
        accepted_at=1.0,
        updated_at=2.0,
    )
