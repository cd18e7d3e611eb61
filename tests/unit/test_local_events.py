"""events/ holds what it claims to: signed with the documented local secret, bodies that parse
(or fail) as intended, queue messages the dispatcher reads, and env vars the template declares.

That each event gets its intended answer from its function is shown by
tests/integration/test_local_commands.py, which runs them through `invoke`.
"""

import base64
import hashlib
import json
from typing import Any

import pytest

from relay.domain.errors import InvalidInvoices, SignatureRefused
from relay.domain.invoice import InvoiceType
from relay.domain.messages import QueuedInvoice
from relay.domain.standard_webhooks import WebhookVerifier
from relay.domain.webhook import parse_invoices
from relay_local.events import EVENTS_DIR, event_files, stale_events
from relay_local.signing import LOCAL_WEBHOOK_SECRET, signed_content, signed_headers
from relay_local.stack import load_template

HTTP_EVENTS = ["ingest-post-invoice", "ingest-post-credit-note", "ingest-post-invalid", "ingest-get-status"]


def event(name: str) -> Any:
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


def test_events_are_exactly_what_the_generator_makes() -> None:
    # Given the committed events/ folder
    # When it is compared with `python -m relay_local events`
    # Then nothing is missing or edited by hand
    assert stale_events() == []
    assert {path.name for path in EVENTS_DIR.glob("*.json")} == set(event_files())


def test_the_local_secret_says_it_is_local_and_is_documented() -> None:
    # Given the secret the events are signed with
    # Then its bytes say it is local only, and events/README.md gives it verbatim
    assert base64.b64decode(LOCAL_WEBHOOK_SECRET.removeprefix("whsec_")) == b"LOCAL-ONLY-not-a-secret!"
    assert LOCAL_WEBHOOK_SECRET in (EVENTS_DIR / "README.md").read_text()


@pytest.mark.parametrize("name", HTTP_EVENTS)
def test_http_events_are_signed_with_the_local_secret(name: str) -> None:
    # Given an HTTP API event of events/
    http = event(name)
    headers = http["headers"]
    # When its signed content (a POST's body, a GET's request line) is signed again with the
    # local secret at the event's own time (reference package)
    again = signed_headers(
        LOCAL_WEBHOOK_SECRET,
        signed_content(http),
        msg_id=headers["webhook-id"],
        at=int(headers["webhook-timestamp"]),
    )
    # Then the signatures agree
    assert headers["webhook-signature"] == again["webhook-signature"]
    # And a receiver refuses it only for its age, which is why `invoke` re-signs it
    with pytest.raises(SignatureRefused, match="more than 5 minutes"):
        WebhookVerifier([LOCAL_WEBHOOK_SECRET]).verify(signed_content(http), headers)


@pytest.mark.parametrize("name", HTTP_EVENTS)
def test_http_events_use_a_route_of_the_template(name: str) -> None:
    # Given the ingest function's HttpApi events in template.yaml
    function = load_template()["Resources"]["IngestFunction"]["Properties"]
    routes = {f"{e['Properties']['Method']} {e['Properties']['Path']}" for e in function["Events"].values()}
    # Then every HTTP event is payload format 2.0 for one of those routes
    http = event(name)
    assert (http["version"], http["routeKey"] in routes) == ("2.0", True)


def test_post_bodies_parse_as_intended() -> None:
    # Given the bodies of the POST events
    invoice, credit_note = (parse_invoices(event(name)["body"]) for name in HTTP_EVENTS[:2])
    # Then the invoice and the credit note are valid, the latter a return
    assert [item.orderId for item in invoice] == ["FY-10001"]
    assert [item.invoiceType for item in credit_note] == [InvoiceType.RETURN]
    # And the invalid one fails on exactly the fields it was built to break
    with pytest.raises(InvalidInvoices) as refused:
        parse_invoices(event("ingest-post-invalid")["body"])
    assert {error.field for error in refused.value.errors} == {"invoiceNumber", "orderItems.0.quantity"}


def test_the_status_event_asks_for_the_posted_invoice() -> None:
    status = event("ingest-get-status")
    assert status["pathParameters"] == {"orderId": "FY-10001"}
    assert status["queryStringParameters"] == {"invoiceType": "sale"}
    assert "body" not in status


def test_sqs_event_records_are_queued_invoices() -> None:
    # Given the dispatcher's SQS event
    records = event("dispatch-sqs-batch")["Records"]
    # Then each body is a QueuedInvoice whose hash ties it to its invoice, as ingest writes them
    for record in records:
        message = QueuedInvoice.from_body(record["body"])
        assert message.content_hash == message.invoice.content_hash()
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324
        assert record["eventSourceARN"].endswith(":InvoiceQueue")
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert len({record["messageId"] for record in records}) == len(records) == 3


def test_plain_bodies_for_make_send_parse() -> None:
    # Given the files `make send` posts
    bodies = {name: (EVENTS_DIR / name).read_text() for name in ("invoice.json", "credit-note.json")}
    mixed_text = (EVENTS_DIR / "invoices-mixed.json").read_text()
    # Then each parses; the mixed one reaches every Fynd outcome and carries a duplicate
    for text in bodies.values():
        assert len(parse_invoices(text)) == 1
    mixed = parse_invoices(mixed_text)
    assert len(mixed) == len(json.loads(mixed_text)) - 1
    prefixes = {item.orderId.split("-")[0] for item in mixed}
    assert {"CANCELLED", "UNKNOWN", "EARLY", "FY"} <= prefixes


def test_env_json_sets_exactly_the_variables_the_template_declares() -> None:
    # Given template.yaml's functions, and env.json for `sam local invoke --env-vars`
    template = load_template()
    env = event("env")
    functions = {
        name for name, spec in template["Resources"].items() if spec["Type"] == "AWS::Serverless::Function"
    }
    # Then it names every function, each with exactly its declared variables
    # (SAM ignores variables the template does not declare)
    assert set(env) == functions
    shared = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for name in functions:
        own = template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {})
        assert set(env[name]) == shared | set(own)
        # Every value is set, but a feature's URL that is off by default (an optional parameter
        # whose default is empty, as ErpNextUrl and CallbackUrl): empty is how the function reads "off"
        off = {
            variable
            for variable, value in own.items()
            if isinstance(value, dict)
            and template["Parameters"].get(value.get("Ref"), {}).get("Default", None) == ""
        }
        assert all(
            isinstance(value, str) and (value or variable in off) for variable, value in env[name].items()
        )


def test_events_readme_lists_every_file() -> None:
    readme = (EVENTS_DIR / "README.md").read_text()
    missing = [name for name in event_files() if f"`{name}`" not in readme]
    assert missing == []
