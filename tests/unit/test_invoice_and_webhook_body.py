"""What the webhook accepts as invoices, and how precisely it says what is wrong."""

import json

import pytest

from factories import invoice, invoice_dict
from relay.domain.errors import (
    FieldError,
    InvalidInvoices,
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.messages import MAX_MESSAGE_BYTES, QueuedInvoice, round_trips
from relay.domain.webhook import (
    MAX_ERRORS_PER_INVOICE,
    MAX_NESTING_DEPTH,
    check_envelope,
    header,
    parse_invoices,
)


def test_single_object_and_array_both_accepted() -> None:
    # Given one invoice as an object and two as an array
    single = json.dumps(invoice_dict("A"))
    many = json.dumps([invoice_dict("A"), invoice_dict("B", invoiceType="return")])
    # When parsed
    # Then each gives its invoices in order
    assert [i.key for i in parse_invoices(single)] == [InvoiceKey("A", InvoiceType.SALE)]
    assert [i.key for i in parse_invoices(many)] == [("A", "sale"), ("B", "return")]


def test_all_fynd_fields_and_location_code_accepted() -> None:
    body = invoice_dict(
        "FY-9",
        invoiceType="return",
        invoiceQrCode="qr",
        irnNumber="irn",
        signedInvoice="signed",
        ackNumber="ack",
        ackDate="2026-11-01",
        orderItems=[{"orderItemId": "item-1", "quantity": 2, "imeiSerialNumber": ["35-1"]}],
        packages=[{"length": 10}],
        locationCode="WH-1",
    )
    parsed = parse_invoices(json.dumps(body))[0]
    # locationCode picks credentials; it is ours and never goes to Fynd
    assert parsed.locationCode == "WH-1"
    assert "locationCode" not in parsed.to_fynd()
    assert parsed.to_fynd()["orderItems"] == [
        {"orderItemId": "item-1", "quantity": 2, "imeiSerialNumber": ["35-1"]}
    ]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"orderId": None}, "orderId", "required"),
        ({"invoiceType": "refund"}, "invoiceType", "sale"),
        ({"invoiceNumber": "  "}, "invoiceNumber", "pattern"),
        ({"invoiceNo": "X"}, "invoiceNo", "unknown field"),
        ({"orderItems": [{"orderItemId": "i", "quantity": 0}]}, "orderItems.0.quantity", "greater"),
        ({"orderItems": [{"orderItemId": "i", "quantity": "2"}]}, "orderItems.0.quantity", "integer"),
        ({"orderId": 1001}, "orderId", "string"),
    ],
)
def test_invalid_invoice_names_index_and_field(change: dict[str, object], field: str, fragment: str) -> None:
    # Given an array whose second invoice is broken
    broken = {**invoice_dict("B"), **change}
    body = json.dumps([invoice_dict("A"), {k: v for k, v in broken.items() if v is not None}])
    # When parsed
    with pytest.raises(InvalidInvoices) as refused:
        parse_invoices(body)
    # Then the error points at index 1 and the field, without echoing the value
    (error,) = refused.value.errors
    assert (error.index, error.field) == (1, field)
    assert fragment in error.message


def test_validation_reports_every_problem_at_once() -> None:
    body = json.dumps([{"orderId": "A"}, invoice_dict("B"), {"invoiceType": "sale"}])
    with pytest.raises(InvalidInvoices) as refused:
        parse_invoices(body)
    assert {(e.index, e.field) for e in refused.value.errors} == {
        (0, "invoiceNumber"),
        (0, "invoiceType"),
        (2, "orderId"),
        (2, "invoiceNumber"),
    }


def test_error_messages_never_echo_the_value_sent() -> None:
    body = json.dumps([invoice_dict("A", signedInvoice=12345678)])
    with pytest.raises(InvalidInvoices) as refused:
        parse_invoices(body)
    assert "12345678" not in json.dumps([e.as_dict() for e in refused.value.errors])


@pytest.mark.parametrize("count", [0, 101])
def test_array_must_hold_1_to_100(count: int) -> None:
    body = json.dumps([invoice_dict(f"O-{n}") for n in range(count)])
    with pytest.raises(InvalidInvoices) as refused:
        parse_invoices(body)
    (error,) = refused.value.errors
    assert error.index is None
    assert "1 to 100" in error.message


def test_hundred_invoices_accepted() -> None:
    body = json.dumps([invoice_dict(f"O-{n}") for n in range(100)])
    assert len(parse_invoices(body)) == 100


@pytest.mark.parametrize("body", ["{not json", '"a string"', "42", "null", ""])
def test_non_json_or_non_container_is_malformed(body: str) -> None:
    with pytest.raises(MalformedBody):
        parse_invoices(body)


def test_identical_repeat_in_one_body_collapses() -> None:
    body = json.dumps([invoice_dict("A"), invoice_dict("A")])
    assert len(parse_invoices(body)) == 1


def test_same_key_with_different_content_in_one_body_is_refused() -> None:
    body = json.dumps([invoice_dict("A"), invoice_dict("A", invoiceNumber="OTHER")])
    with pytest.raises(InvalidInvoices) as refused:
        parse_invoices(body)
    assert refused.value.errors[0].index == 1


def test_content_hash_ignores_key_order_but_not_content() -> None:
    a = invoice("A", irnNumber="X")
    reordered = invoice(**{"irnNumber": "X", "order_id": "A"})
    assert a.content_hash() == reordered.content_hash()
    assert a.content_hash() != invoice("A", irnNumber="Y").content_hash()


def test_envelope_checks_size_then_media_type() -> None:
    with pytest.raises(PayloadTooLarge):
        check_envelope("application/json", 1001, 1000)
    with pytest.raises(UnsupportedMediaType):
        check_envelope("text/plain", 10, 1000)
    with pytest.raises(UnsupportedMediaType):
        check_envelope(None, 10, 1000)
    check_envelope("application/json; charset=utf-8", 1000, 1000)
    check_envelope("application/vnd.erp+json", 10, 1000)


def test_a_refused_envelope_says_what_was_sent_and_what_is_taken() -> None:
    # Given a body one byte over the limit, one sent as text, and one sent with no content type
    # When the envelope is checked
    # Then each refusal tells the sender what it sent and what the relay takes
    with pytest.raises(PayloadTooLarge) as too_large:
        check_envelope("application/json", 1001, 1000)
    assert str(too_large.value) == "body is 1001 bytes; the limit is 1000"
    with pytest.raises(UnsupportedMediaType) as text:
        check_envelope("text/plain", 10, 1000)
    assert str(text.value) == "content type must be application/json, not text/plain"
    with pytest.raises(UnsupportedMediaType) as missing:
        check_envelope(None, 10, 1000)
    assert str(missing.value) == "content type must be application/json, not missing"


def test_key_round_trips_through_its_text_form() -> None:
    key = InvoiceKey("FY#7", InvoiceType.RETURN)
    assert InvoiceKey.parse(str(key)) == key


def test_a_422_says_how_many_problems_there_are_and_that_nothing_was_queued() -> None:
    # Given two invoices each missing its invoiceNumber
    body = json.dumps([{"orderId": "A", "invoiceType": "sale"}, {"orderId": "B", "invoiceType": "sale"}])
    # When parsed
    with pytest.raises(InvalidInvoices) as invalid:
        parse_invoices(body)
    # Then the summary counts the problems and says nothing was queued; each is listed by index
    assert str(invalid.value) == "2 problem(s) in the invoices; nothing was queued"
    assert [error.index for error in invalid.value.errors] == [0, 1]


def test_a_422_with_its_own_detail_says_that_instead_of_the_count() -> None:
    problem = FieldError(None, "orderId", "not an order id")
    assert str(InvalidInvoices([problem], "the order id is not one the relay can look up")) == (
        "the order id is not one the relay can look up"
    )


def test_a_message_fits_sqs_up_to_its_last_byte_counting_the_webhook_id_attribute() -> None:
    # Given queue messages carrying a webhook-id, grown to exactly SQS's limit and one byte past it
    def message(padding: int) -> QueuedInvoice:
        body = invoice("A", packages=[{"note": "x" * padding}])
        return QueuedInvoice(
            invoice=body, content_hash=body.content_hash(), accepted_at=0.0, correlation_id="wh-1"
        )

    attribute = len("correlationId") + len("String") + len("wh-1")
    padding = MAX_MESSAGE_BYTES - attribute - len(message(0).to_body().encode())
    at_limit, past_it = message(padding), message(padding + 1)
    # When ingest checks each before anything is written
    # Then the message at the limit, body and attribute together, is queued; the next byte is refused
    assert at_limit.queued_bytes() == MAX_MESSAGE_BYTES
    assert round_trips(at_limit)
    assert not round_trips(past_it)


def test_a_message_without_a_webhook_id_costs_its_body_alone() -> None:
    # Given a queue message with no webhook-id (a sender that sends none), grown to SQS's limit
    def message(padding: int) -> QueuedInvoice:
        body = invoice("A", packages=[{"note": "x" * padding}])
        return QueuedInvoice(invoice=body, content_hash=body.content_hash(), accepted_at=0.0)

    padding = MAX_MESSAGE_BYTES - len(message(0).to_body().encode())
    # When ingest checks it / Then it fits: no attribute is sent for it
    assert message(padding).queued_bytes() == MAX_MESSAGE_BYTES
    assert round_trips(message(padding))


def test_a_422_names_each_problem_where_it_is_and_never_echoes_the_value() -> None:
    # Given an invoice with an unknown field, one nested too deep beside a bad string, one with a
    # field name the queue cannot carry, and two differing invoices for one key
    deep: object = "x"
    for _ in range(MAX_NESTING_DEPTH + 1):
        deep = [deep]
    bodies = [
        {**invoice_dict("A"), "bogus": 1},
        {**invoice_dict("B"), "packages": [{"deep": deep}, {"note": "\ufffe"}]},
        {**invoice_dict("C"), "packages": [{"na\ufffeme": 1}]},
    ]
    # When each body is parsed
    problems = []
    for body in bodies:
        with pytest.raises(InvalidInvoices) as invalid:
            parse_invoices(json.dumps([body]))
        problems.append(invalid.value.errors)
    # Then each is named by index, path and what is wrong
    assert problems[0] == [FieldError(0, "bogus", "unknown field")]
    deep_error, text_error = problems[1]
    assert (deep_error.index, deep_error.field.startswith("packages.0.deep.0.")) == (0, True)
    assert deep_error.message == f"nested deeper than {MAX_NESTING_DEPTH} levels"
    assert text_error == FieldError(
        0, "packages.1.note", "text holds U+FFFE, a character the queue cannot carry (docs/interface.md)"
    )
    assert problems[2] == [
        FieldError(
            0,
            "packages.0",
            "a field name holds U+FFFE, a character the queue cannot carry (docs/interface.md)",
        )
    ]


def test_two_invoices_for_one_key_with_different_content_are_refused_naming_the_first() -> None:
    body = json.dumps([invoice_dict("A"), invoice_dict("B"), invoice_dict("A", invoiceNumber="SINV-other")])
    with pytest.raises(InvalidInvoices) as invalid:
        parse_invoices(body)
    assert invalid.value.errors == [
        FieldError(2, "orderId", "same orderId and invoiceType as index 0, different content")
    ]


def test_an_invoice_full_of_bad_text_is_answered_with_at_most_its_cap_of_problems() -> None:
    bad = [{"note": "\ufffe"} for _ in range(MAX_ERRORS_PER_INVOICE + 5)]
    with pytest.raises(InvalidInvoices) as invalid:
        parse_invoices(json.dumps([{**invoice_dict("A"), "packages": bad}]))
    assert len(invalid.value.errors) == MAX_ERRORS_PER_INVOICE


def test_only_json_media_types_are_taken_with_any_parameters() -> None:
    check_envelope("application/json; charset=utf-8; boundary=x", 10, 1000)
    for refused in ("application/xml", "text/plain+json"):
        with pytest.raises(UnsupportedMediaType):
            check_envelope(refused, 10, 1000)


def test_headers_are_found_whatever_their_case() -> None:
    headers = {"Content-Type": "application/json", "webhook-id": "msg_1"}
    assert header(headers, "content-type") == "application/json"
    assert header(headers, "Webhook-Id") == "msg_1"
    assert header(headers, "webhook-signature") is None


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("[" * 100_000, "body is nested too deeply to be read"),
        (
            "{",
            "body is not valid JSON: Expecting property name enclosed in double quotes at line 1, column 2",
        ),
        ('{"orderId": NaN}', "body is not valid JSON"),
        ('"an invoice"', "body must be a JSON object or an array of objects"),
    ],
    ids=["too deep", "broken", "NaN", "a string"],
)
def test_a_400_says_what_is_wrong_with_the_body_without_echoing_it(body: str, detail: str) -> None:
    with pytest.raises(MalformedBody) as malformed:
        parse_invoices(body)
    assert str(malformed.value) == detail


def test_an_empty_array_is_answered_with_the_count_the_relay_takes() -> None:
    with pytest.raises(InvalidInvoices) as invalid:
        parse_invoices("[]")
    assert invalid.value.errors == [FieldError(None, "", "send 1 to 100 invoices, not 0")]


def test_every_unreadable_invoice_of_a_webhook_is_named_not_only_the_first() -> None:
    # Given two invoices each holding a lone surrogate, and a good one between them
    body = json.dumps(
        [
            {**invoice_dict("A"), "packages": [{"n": "\ud83d"}]},
            invoice_dict("B"),
            {**invoice_dict("C"), "packages": ["\ud83d"]},
        ]
    )
    # When parsed / Then both are named, each with why
    with pytest.raises(InvalidInvoices) as invalid:
        parse_invoices(body)
    assert invalid.value.errors == [
        FieldError(0, "packages.0.n", "text is not valid Unicode (a lone surrogate)"),
        FieldError(2, "packages.0", "text is not valid Unicode (a lone surrogate)"),
    ]
