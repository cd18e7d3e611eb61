"""docs/openapi.yaml agrees with the code: a valid OpenAPI 3.1 document whose invoice schema is
the pydantic models' (fields, required, types, limits), whose enums are the domain's, and
whose status document is what the status API builds."""

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate

from relay.domain.invoice import Invoice, InvoiceKey, InvoiceType, OrderItem
from relay.domain.ledger import InvoiceStatus, LastError, LedgerEntry, LedgerEvent
from relay.domain.status import status_document as _status_document

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
SCHEMAS = SPEC["components"]["schemas"]
ORDER_ID_CONTRACT = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""relay-interface.md / the team contract: orderId and locationCode."""


def resolved(schema: dict[str, Any]) -> dict[str, Any]:
    """A spec schema with its top-level $ref followed, and `oneOf [X, null]` read as X."""
    if "$ref" in schema:
        return resolved(SCHEMAS[schema["$ref"].rsplit("/", 1)[1]])
    if "oneOf" in schema:
        (only,) = [option for option in schema["oneOf"] if option.get("type") != "null"]
        return resolved(only)
    return schema


def model_field(model_schema: dict[str, Any], name: str) -> dict[str, Any]:
    field = model_schema["properties"][name]
    if "anyOf" in field:
        (only,) = [option for option in field["anyOf"] if option.get("type") != "null"]
        return dict(only)
    return dict(field)


def spec_accepts_null(schema: dict[str, Any]) -> bool:
    types = schema.get("type")
    return (isinstance(types, list) and "null" in types) or any(
        option.get("type") == "null" for option in schema.get("oneOf", [])
    )


def test_the_spec_is_valid_openapi_3_1() -> None:
    # Given docs/openapi.yaml / Then the reference validator accepts it as OpenAPI 3.1
    assert SPEC["openapi"].startswith("3.1")
    validate(SPEC)


@pytest.mark.parametrize(("spec_name", "model"), [("Invoice", Invoice), ("OrderItem", OrderItem)])
def test_invoice_schemas_have_the_models_fields_and_required_ones(spec_name: str, model: type) -> None:
    # Given the spec's schema and the pydantic model the relay validates with
    spec, generated = SCHEMAS[spec_name], model.model_json_schema()
    # Then they name the same fields, require the same ones, and both refuse unknown fields
    assert set(spec["properties"]) == set(generated["properties"])
    assert set(spec["required"]) == set(generated["required"])
    assert spec["additionalProperties"] is False
    assert generated["additionalProperties"] is False
    # And an optional field may be null in both; a required one in neither
    for name, field in spec["properties"].items():
        assert spec_accepts_null(field) == (name not in generated["required"]), name


@pytest.mark.parametrize(("spec_name", "model"), [("Invoice", Invoice), ("OrderItem", OrderItem)])
def test_invoice_field_limits_agree_with_the_models(spec_name: str, model: type) -> None:
    # Given each field's limits in the spec and in the model's JSON schema
    spec, generated = SCHEMAS[spec_name], model.model_json_schema()
    for name in spec["properties"]:
        ours, theirs = resolved(spec["properties"][name]), model_field(generated, name)
        if "$ref" in theirs:
            theirs = generated["$defs"][theirs["$ref"].rsplit("/", 1)[1]]
        # Then lengths, minimums, enums and item counts are the same
        for limit in ("minLength", "maxLength", "minimum", "enum", "minItems"):
            assert ours.get(limit) == theirs.get(limit), (name, limit)
        # And patterns too, except orderId/locationCode, where the spec states the contract's
        # stricter set: every value it allows, the model must accept (tested below)
        if name not in ("orderId", "locationCode"):
            assert ours.get("pattern") == theirs.get("pattern"), name


def test_order_ids_the_spec_allows_are_accepted_by_the_model() -> None:
    # Given the contract's orderId pattern, which the spec states for orderId and locationCode
    assert resolved(SCHEMAS["Invoice"]["properties"]["orderId"])["pattern"] == ORDER_ID_CONTRACT
    assert resolved(SCHEMAS["Invoice"]["properties"]["locationCode"])["pattern"] == ORDER_ID_CONTRACT
    # When the model validates ids at the edges of that pattern
    for order_id in ("A", "FY-10001", "a.b_c-d", "9" * 128, "Z" + "._-" * 42 + "x"):
        assert re.fullmatch(ORDER_ID_CONTRACT, order_id)
        # Then it accepts every one of them
        Invoice.model_validate(
            {"orderId": order_id, "invoiceNumber": "I-1", "invoiceType": "sale", "locationCode": order_id}
        )


def test_enums_are_the_domains() -> None:
    assert SCHEMAS["InvoiceType"]["enum"] == [member.value for member in InvoiceType]
    assert SCHEMAS["InvoiceStatus"]["enum"] == [member.value for member in InvoiceStatus]


def status_schema() -> dict[str, Any]:
    """The status document's schema, with the spec's components resolvable."""
    return {"$ref": "#/components/schemas/InvoiceStatusDocument", "components": SPEC["components"]}


UNSENT = LedgerEntry(
    InvoiceKey("FY-4", InvoiceType.SALE), InvoiceStatus.QUEUED, "h", "INV-4", 0, 1.0, 1.0, send_failed_at=2.0
)
"""A QUEUED entry ingest marked when SQS refused its message."""


@pytest.mark.parametrize(
    "entry",
    [
        LedgerEntry(InvoiceKey("FY-1", InvoiceType.SALE), InvoiceStatus.QUEUED, "h", "INV-1", 0, 1.0, 1.0),
        UNSENT,
        LedgerEntry(
            InvoiceKey("FY-2", InvoiceType.RETURN),
            InvoiceStatus.RETRYING,
            "h",
            "CN-2",
            3,
            1.0,
            2.0,
            last_error=LastError("fynd_unavailable", "Fynd answered 503"),
            correlation_id="msg_1",
            retry_at=3.0,
        ),
        LedgerEntry(
            InvoiceKey("FY-3", InvoiceType.SALE),
            InvoiceStatus.INVOICED,
            "h",
            "INV-3",
            2,
            1.0,
            5.0,
            already_invoiced=True,
            history=(
                LedgerEvent(
                    "replay", 4.0, "ops@example", "order reinstated", LastError("IN401", "cancelled")
                ),
            ),
        ),
    ],
    ids=["queued", "queued-unsent", "retrying", "replayed"],
)
def test_the_status_api_document_is_what_the_spec_says(entry: LedgerEntry) -> None:
    # Given a ledger entry / When the status API builds its document
    document = _status_document(entry)
    # Then the spec's schema accepts it (extra fields would be refused: additionalProperties false)
    jsonschema.validate(document, status_schema(), cls=jsonschema.Draft202012Validator)


def test_the_status_of_a_queued_invoice_the_queue_refused_says_when() -> None:
    # Given an entry ingest marked when SQS refused its message (UNSENT)
    # When the status API shows it / Then the operator sees that its resend will queue it
    assert _status_document(UNSENT)["sendFailedAt"] == "1970-01-01T00:00:02.000Z"
