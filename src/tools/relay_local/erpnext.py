"""The ERPNext simulator beside `make run`, when asked (`ERPNEXT_SIMULATOR=1`).

A simulated ERPNext site (src/tools/erpnext_simulator, docs/erpnext/simulator.md) whose
Frappe Webhooks are the pack's own (docs/erpnext/webhook-*.json), enabled, signed with the
run's `frappe` secret and pointed at the local API: submitting a Sales Invoice in it, or
inserting an e-Invoice Log, sends the invoice to the relay exactly as a real site would, and
every attempt is a `Webhook Request Log` row that `relay recover` can read.

The DocTypes the pack ships (any `docs/erpnext/*.json` whose `doctype` is "DocType", such as
`Fynd Invoice Sync`) are enforced as a real site enforces them. Its URL and API key are the
`ERPNEXT_URL`, `ERPNEXT_API_KEY` and `ERPNEXT_API_SECRET` of the run, unless those are set.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from erpnext_simulator import DocTypeMeta, ErpnextSimulator
from erpnext_simulator.webhooks import WebhookRunner

PACK = Path(__file__).resolve().parents[3] / "docs" / "erpnext"
WEBHOOK_PATH = "/v1/invoices"


def pack_documents(kind: str) -> list[dict[str, Any]]:
    """The pack's exported documents of one `doctype` ("Webhook", "DocType"), by file name."""
    found = []
    for path in sorted(PACK.glob("*.json")):
        document = json.loads(path.read_text())
        if isinstance(document, dict) and document.get("doctype") == kind:
            found.append(document)
    return found


class LocalErpnext:
    def __init__(self, port: int, frappe_secret: str) -> None:
        self.simulator = ErpnextSimulator(
            port=port, doctypes=[DocTypeMeta.from_doctype_json(doc) for doc in pack_documents("DocType")]
        )
        self._secret = frappe_secret
        self.runner: WebhookRunner | None = None

    def start(self) -> "LocalErpnext":
        self.simulator.start()
        return self

    def connect(self, relay_api_url: str) -> None:
        """Run the pack's Webhooks, enabled and signed, against the relay at `relay_api_url`."""
        webhooks = [dict(doc, enabled=1, enable_security=1) for doc in pack_documents("Webhook")]
        self.runner = WebhookRunner(
            self.simulator.site,
            webhooks,
            request_url=f"{relay_api_url.rstrip('/')}{WEBHOOK_PATH}",
            secret=self._secret,
        )
        self.simulator.site.on_event(self.runner)
        self.simulator.site.controls["webhooks"] = self.runner

    def environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """ERPNEXT_URL and its key pair for the functions, unless the caller chose its own site."""
        if environ.get("ERPNEXT_URL"):
            return {}
        return {
            "ERPNEXT_URL": self.simulator.url,
            "ERPNEXT_API_KEY": self.simulator.api_key,
            "ERPNEXT_API_SECRET": self.simulator.api_secret,
        }

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.simulator.stop()
