"""What the simulator knows about each DocType: the rules its REST API enforces.

A DocType the simulator was not told about is accepted as a plain, non-submittable one
named by hash, so a client can create anything. `DocTypeMeta.from_doctype_json` reads the
rules from a DocType's exported JSON (`bench export-doc`, or the file an app ships), so a
custom DocType shipped in `docs/erpnext/` is enforced as a real site would enforce it.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DocTypeMeta:
    name: str
    is_submittable: bool = False
    autoname: str = "hash"
    """`hash`, `field:<fieldname>` (the name is that field's value), or `<PREFIX>-.#####`."""
    allow_on_submit: frozenset[str] = frozenset()
    """Fields a submitted document may still change (Frappe's `allow_on_submit`)."""
    links: Mapping[str, str] = field(default_factory=dict)
    """Link fields: fieldname -> the DocType its value must name (LinkValidationError otherwise)."""
    mandatory: frozenset[str] = frozenset()
    unique: frozenset[str] = frozenset()
    fields: frozenset[str] | None = None
    """The DocType's fields, when known: other keys in a write are ignored, as Frappe ignores them."""

    @classmethod
    def from_doctype_json(cls, document: Mapping[str, Any]) -> "DocTypeMeta":
        rows = [row for row in document.get("fields", []) if isinstance(row, Mapping)]
        autoname = str(document.get("autoname") or "hash")
        if autoname.startswith("naming_series:") or autoname == "Prompt":
            autoname = "hash"
        return cls(
            name=str(document["name"]),
            is_submittable=bool(document.get("is_submittable")),
            autoname=autoname,
            allow_on_submit=frozenset(row["fieldname"] for row in rows if row.get("allow_on_submit")),
            links={row["fieldname"]: row["options"] for row in rows if row.get("fieldtype") == "Link"},
            mandatory=frozenset(row["fieldname"] for row in rows if row.get("reqd")),
            unique=frozenset(row["fieldname"] for row in rows if row.get("unique")),
            fields=frozenset(row["fieldname"] for row in rows if row.get("fieldname")) or None,
        )


STANDARD_FIELDS = frozenset(
    {"name", "owner", "creation", "modified", "modified_by", "docstatus", "idx", "doctype"}
)

SALES_INVOICE = DocTypeMeta(
    "Sales Invoice",
    is_submittable=True,
    autoname="SINV-.YY.-.#####",
    links={"customer": "Customer"},
    # No standard field is listed: which ones allow changes after submit depends on the
    # ERPNext version and the site's Property Setters. Tests and sites add their own.
)
E_INVOICE_LOG = DocTypeMeta(
    "e-Invoice Log",
    autoname="field:irn",  # india_compliance/gst_india/doctype/e_invoice_log/e_invoice_log.json
    unique=frozenset({"irn"}),
)
WEBHOOK_REQUEST_LOG = DocTypeMeta("Webhook Request Log", autoname="hash")

DEFAULT_DOCTYPES: tuple[DocTypeMeta, ...] = (SALES_INVOICE, E_INVOICE_LOG, WEBHOOK_REQUEST_LOG)
