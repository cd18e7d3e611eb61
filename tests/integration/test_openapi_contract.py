"""docs/openapi.yaml against the running local API: schemathesis generates requests from the
spec (valid ones and ones that break it), every one signed as an ERP signs it, and each
answer must be no 5xx and inside the spec (status code, content type, headers, body schema).

Bounded in `make test` (CONTRACT_EXAMPLES, default 10 per operation and mode); `make
contract` runs it with many more.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay_cli.webhook import sign, status_headers
from relay_client import RelayClient

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "10"))
CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def signed_request(case: Any, base_url: str, secret: str) -> requests.PreparedRequest:
    """The request schemathesis generated, sent the way an ERP sends it: signed over exactly
    the bytes (POST) or the request line (GET) that go on the wire."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in SIGNATURE_HEADERS}
    path = case.path
    for name, value in (case.path_parameters or {}).items():
        path = path.replace("{" + name + "}", quote(str(value), safe=""))
    query = urlencode(case.query or {}, doseq=True)
    url = f"{base_url}{path}" + (f"?{query}" if query else "")
    if case.method.upper() == "GET":
        # Always a query, so the signed line `GET <path>?<query>` is the line sent.
        url = url if query else f"{url}?"
        headers |= status_headers(secret, url)
        return requests.Request("GET", url, headers=headers).prepare()
    # Negative cases may carry raw bytes (not JSON, not UTF-8): sent as they are; the relay
    # refuses those before it verifies, so the signature over their lossy text never matters.
    raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    headers |= {
        "Content-Type": case.media_type or "application/json",
        **sign(secret, raw.decode(errors="replace")),
    }
    return requests.Request(case.method.upper(), url, headers=headers, data=raw).prepare()


@pytest.mark.parametrize("pipeline_config", [{"consume": False}], indirect=True)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("operation_id", ["postInvoices", "getInvoiceStatus"])
def test_every_answer_of_the_local_api_is_in_the_spec(
    relay: RelayClient, operation_id: str, mode: GenerationMode
) -> None:
    # Given the spec, and the local relay (the functions as deployed, over HTTP)
    schema = schemathesis.openapi.from_path(SPEC)
    operation = schema.find_operation_by_id(operation_id)
    session = requests.Session()
    seen: set[int] = set()

    # When schemathesis sends what the spec describes (or, negative, what it forbids), signed
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), extra=st.none())
    def exchange(case: Any, extra: None) -> None:
        response = session.send(signed_request(case, relay.pipeline.api_url, relay.secret), timeout=30)
        seen.add(response.status_code)
        # Then no answer is a 5xx, and each one's status, type, headers and body are in the spec
        case.validate_response(response, checks=CHECKS)

    exchange()
    assert seen, "no request was made"
    assert all(status < 500 for status in seen)
