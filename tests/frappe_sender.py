"""A sender that behaves exactly like Frappe's Webhook, for the shipped ERPNext documents.

What Frappe does (frappe/integrations/doctype/webhook/webhook.py, docs/erpnext/README.md):
- renders the Webhook's Jinja "JSON Request Body" in a sandboxed Jinja environment with
  `DebugUndefined`, against `doc.as_dict(convert_dates_to_str=True)` (a frappe._dict, whose
  attributes read its keys and are None when missing), with `frappe.db.get_value` among
  the globals, then parses the result with `json.loads`;
- sends `json.dumps(data, default=str)` as a str through `requests`, so with no
  Content-Type header, and the body encoded as ISO-8859-1 by http.client (all ASCII, as
  `json.dumps` escapes everything else);
- signs `json.dumps(data)`: X-Frappe-Webhook-Signature = base64(HMAC-SHA256(secret, that)).
"""

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import DebugUndefined
from jinja2.sandbox import SandboxedEnvironment

DOCS = Path(__file__).resolve().parents[1] / "docs" / "erpnext"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "erpnext"
SALE_WEBHOOK = "webhook-sales-invoice.json"
E_INVOICE_WEBHOOK = "webhook-sales-invoice-e-invoice.json"
REQUESTS_HEADERS = {
    "User-Agent": "python-requests/2.32.3",
    "Accept-Encoding": "gzip, deflate",
    "Accept": "*/*",
    "Connection": "keep-alive",
}
"""What `requests` adds to every request; Frappe's Webhook adds only its signature (and the
user's own headers, none in the shipped documents)."""


class FrappeDict(dict[str, Any]):
    """frappe._dict: `doc.field` reads the key and is None when missing; `doc.items` stays a method."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def as_frappe(value: Any) -> Any:
    """A JSON fixture as Frappe hands it to the template: dicts (child rows too) as frappe._dict."""
    if isinstance(value, dict):
        return FrappeDict({key: as_frappe(item) for key, item in value.items()})
    if isinstance(value, list):
        return [as_frappe(item) for item in value]
    return value


def webhook_document(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DOCS / name).read_text())
    return document


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def sales_invoice(name: str = "sales-invoice.json", /, **changes: Any) -> FrappeDict:
    document: FrappeDict = as_frappe({**fixture(name), **changes})
    return document


def e_invoice_logs() -> dict[str, FrappeDict]:
    """The e-Invoice Log rows India Compliance writes, by IRN; Datetime fields come back as datetime."""
    logs: dict[str, FrappeDict] = {}
    for row in fixture("e-invoice-logs.json"):
        logs[row["irn"]] = as_frappe(
            {**row, "acknowledged_on": datetime.fromisoformat(row["acknowledged_on"])}
        )
    return logs


def render(webhook: Mapping[str, Any], doc: FrappeDict, logs: Mapping[str, FrappeDict]) -> Any:
    """get_webhook_data(): the data Frappe sends for `doc`."""
    template = webhook["webhook_json"]
    assert ".__" not in template, "frappe.render_template refuses this template as illegal"
    environment = SandboxedEnvironment(undefined=DebugUndefined)
    environment.globals["frappe"] = FrappeDict(db=FrappeDict(get_value=_get_value(logs)))
    return json.loads(environment.from_string(template).render({"doc": doc, "utils": FrappeDict()}))


def fires(webhook: Mapping[str, Any], doc: FrappeDict) -> bool:
    """run_webhooks(): whether the Webhook's condition holds for `doc` (Frappe's safe_eval)."""
    condition = webhook.get("condition")
    return not condition or bool(eval(condition, {"__builtins__": {}}, {"doc": doc}))  # noqa: S307


@dataclass(frozen=True)
class FrappeRequest:
    body: bytes
    headers: dict[str, str]


def frappe_request(data: Any, secret: str | None) -> FrappeRequest:
    """enqueue_webhook(): the exact bytes and headers Frappe puts on the wire for `data`."""
    headers = dict(REQUESTS_HEADERS)
    if secret is not None:
        signed = json.dumps(data).encode("utf8")
        signature = hmac.new(secret.encode("utf8"), signed, hashlib.sha256).digest()
        headers["X-Frappe-Webhook-Signature"] = base64.b64encode(signature).decode()
    return FrappeRequest(json.dumps(data, default=str).encode("iso-8859-1"), headers)


def _get_value(logs: Mapping[str, FrappeDict]) -> Callable[..., Any]:
    def get_value(doctype: str, name: str, fieldnames: list[str], as_dict: bool = False) -> Any:
        assert doctype == "e-Invoice Log"
        assert as_dict
        row = logs.get(name)
        return None if row is None else FrappeDict({field: row.get(field) for field in fieldnames})

    return get_value
