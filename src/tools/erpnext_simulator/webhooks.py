"""Frappe's Webhook, run by the simulated site: the ERP side of "submit an invoice, it reaches the relay".

What Frappe does (frappe/integrations/doctype/webhook/webhook.py, checked against the
versions docs/erpnext/README.md names), and so what this runner does:

- a document event (`after_insert`, `on_submit`, `on_change`, ...) of the Webhook's DocType
  runs every enabled Webhook for that event whose `condition` holds, evaluated with no
  builtins but `int`, `float`, `round` (Frappe's safe_eval) against `doc`;
- the "JSON Request Body" is Jinja, rendered in a sandbox with `doc` (the document as a
  `frappe._dict`, dates as text) and the safe globals (`frappe.get_doc`, `frappe.db.get_value`),
  then parsed with `json.loads`; a template that fails is logged and nothing is sent;
- the request is `json.dumps(data, default=str)` with no Content-Type, and with "Enable
  Security" an `X-Frappe-Webhook-Signature` of base64(HMAC-SHA256(secret, json.dumps(data)));
- v14/v15 try 3 times (a timeout again at once, other failures after a pause) and then give
  up; every attempt writes a `Webhook Request Log` row: `url`, `headers`, `data`
  (`frappe.as_json`: indent 1, sorted keys), `response`, and `error` (a traceback, empty on
  success).

Deliveries run on one background thread, as Frappe's after-commit jobs do; `join()` waits for
them. `undelivered` (a predicate on the rendered data) makes a delivery fail without reaching
the relay, as an outage between the two would: its rows are there for recovery.

Needs jinja2 (the relay's dev extras), imported only when a runner is made.
"""

import base64
import hashlib
import hmac
import json
import queue
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from erpnext_simulator.answers import FrappeError
from erpnext_simulator.site import FrappeSite

SIGNATURE_HEADER = "X-Frappe-Webhook-Signature"
_SAFE_EVAL_GLOBALS = {"int": int, "float": float, "round": round}


class FrappeDict(dict[str, Any]):
    """frappe._dict: `doc.field` reads the key and is None when missing; `doc.items` stays a method."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def as_frappe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrappeDict({key: as_frappe(item) for key, item in value.items()})
    if isinstance(value, list):
        return [as_frappe(item) for item in value]
    return value


def condition_holds(webhook: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
    """run_webhooks(): the Webhook's condition, as Frappe's safe_eval evaluates it."""
    condition = webhook.get("condition")
    if not condition:
        return True
    return bool(eval(condition, {"__builtins__": {}, **_SAFE_EVAL_GLOBALS}, {"doc": as_frappe(doc)}))  # noqa: S307


def render(
    webhook: Mapping[str, Any],
    doc: Mapping[str, Any],
    get_doc: Callable[[str, str], Any],
    *,
    restricted_globals: bool = False,
) -> Any:
    """get_webhook_data(): the data Frappe sends for `doc` (json.loads of the rendered template).
    `restricted_globals`: as newer Frappe renders unless `disable_render_safe_exec` is set, with
    no `frappe.get_doc` and no `frappe.db` (docs/erpnext/README.md)."""
    from jinja2 import DebugUndefined
    from jinja2.sandbox import SandboxedEnvironment

    template = str(webhook["webhook_json"])
    if ".__" in template:
        raise ValueError("frappe.render_template refuses this template as illegal")
    environment = SandboxedEnvironment(undefined=DebugUndefined)

    def get_value(doctype: str, name: str, fieldnames: Sequence[str], as_dict: bool = False) -> Any:
        try:
            found = get_doc(doctype, name)
        except FrappeError:
            return None
        values = FrappeDict({field: found.get(field) for field in fieldnames})
        return values if as_dict else [values[field] for field in fieldnames]

    if restricted_globals:
        environment.globals["frappe"] = FrappeDict(utils=FrappeDict())
    else:
        environment.globals["frappe"] = FrappeDict(get_doc=get_doc, db=FrappeDict(get_value=get_value))
    return json.loads(
        environment.from_string(template).render({"doc": as_frappe(doc), "utils": FrappeDict()})
    )


@dataclass(frozen=True)
class FrappeRequest:
    body: bytes
    headers: dict[str, str]


def frappe_request(data: Any, secret: str | None) -> FrappeRequest:
    """enqueue_webhook(): the exact bytes and headers Frappe puts on the wire for `data`."""
    headers = {"User-Agent": "python-requests/2.32.3", "Accept-Encoding": "gzip, deflate", "Accept": "*/*"}
    if secret is not None:
        signed = json.dumps(data).encode("utf8")
        signature = hmac.new(secret.encode("utf8"), signed, hashlib.sha256).digest()
        headers[SIGNATURE_HEADER] = base64.b64encode(signature).decode()
    return FrappeRequest(json.dumps(data, default=str).encode("iso-8859-1"), headers)


@dataclass(frozen=True)
class Attempt:
    status: int | None
    response: str | None
    error: str
    """Empty on a 2xx; otherwise a traceback's last line, as Frappe's `error` column holds."""


Sender = Callable[[str, FrappeRequest, float], Attempt]


def http_sender(http: urllib3.PoolManager | None = None) -> Sender:
    pool = http or urllib3.PoolManager(retries=False)

    def send(url: str, request: FrappeRequest, timeout: float) -> Attempt:
        try:
            answer = pool.request("POST", url, body=request.body, headers=request.headers, timeout=timeout)
        except urllib3.exceptions.ReadTimeoutError:
            return Attempt(None, None, "Traceback ...\nrequests.exceptions.ReadTimeout: Read timed out.")
        except urllib3.exceptions.HTTPError as error:
            return Attempt(
                None, None, f"Traceback ...\nrequests.exceptions.ConnectionError: {type(error).__name__}"
            )
        text = answer.data.decode("utf-8", errors="replace")
        if 200 <= answer.status < 300:
            return Attempt(answer.status, text, "")
        kind = "Client" if answer.status < 500 else "Server"
        return Attempt(
            answer.status, text, f"Traceback ...\nrequests.exceptions.HTTPError: {answer.status} {kind} Error"
        )

    return send


class WebhookRunner:
    """Runs the given Webhook documents on a FrappeSite's doc events; attach with `site.on_event(runner)`."""

    def __init__(
        self,
        site: FrappeSite,
        webhooks: Sequence[Mapping[str, Any]],
        *,
        request_url: str | None = None,
        secret: str | None = None,
        sender: Sender | None = None,
        attempts: int = 3,
        undelivered: Callable[[Any], bool] | None = None,
        restricted_globals: bool = False,
    ) -> None:
        self.site = site
        self.webhooks = [
            dict(webhook, request_url=request_url or webhook["request_url"]) for webhook in webhooks
        ]
        self.secret = secret
        self._send = sender or http_sender()
        self._attempts = attempts
        self._restricted = restricted_globals
        self._undelivered = undelivered or self._by_rate
        self.undelivered_rate = 0.0
        """Share of deliveries that never reach the relay (set through `/_sim/webhooks`)."""
        self._random = random.Random(0)  # noqa: S311 - a fault schedule, not a secret
        self._jobs: queue.Queue[tuple[Mapping[str, Any], Mapping[str, Any]] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="frappe-webhooks", daemon=True)
        self._worker.start()

    def __call__(self, event: str, doctype: str, document: dict[str, Any]) -> None:
        for webhook in self.webhooks:
            if (
                webhook["webhook_doctype"] == doctype
                and webhook["webhook_docevent"] == event
                and condition_holds(webhook, document)
            ):
                self._jobs.put((webhook, document))

    def reseed(self, seed: int) -> None:
        self._random = random.Random(seed)  # noqa: S311 - a fault schedule, not a secret

    def _by_rate(self, _data: Any) -> bool:
        return self.undelivered_rate > 0 and self._random.random() < self.undelivered_rate

    def join(self) -> None:
        """Wait until every delivery queued so far has been made (or given up)."""
        self._jobs.join()

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=10)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._deliver(*job)
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def _get_doc(self, doctype: str, name: str) -> Any:
        found = self.site.document(doctype, name)
        if found is None:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
        return as_frappe(found)

    def _deliver(self, webhook: Mapping[str, Any], document: Mapping[str, Any]) -> None:
        url = str(webhook["request_url"])
        try:
            data = render(webhook, document, self._get_doc, restricted_globals=self._restricted)
        except Exception as error:  # Frappe logs any template failure and sends nothing
            self._log(webhook, document, url, None, None, Attempt(None, None, f"Traceback ...\n{error!r}"))
            return
        request = frappe_request(data, self.secret if webhook.get("enable_security") else None)
        timeout = float(webhook.get("timeout") or 5)
        undelivered = self._undelivered(data)
        for _ in range(self._attempts):
            if undelivered:
                attempt = Attempt(
                    None, None, "Traceback ...\nrequests.exceptions.ConnectionError: Connection refused"
                )
            else:
                attempt = self._send(url, request, timeout)
            self._log(webhook, document, url, request.headers, data, attempt)
            if not attempt.error:
                return

    def _log(
        self,
        webhook: Mapping[str, Any],
        document: Mapping[str, Any],
        url: str,
        headers: Mapping[str, str] | None,
        data: Any,
        attempt: Attempt,
    ) -> None:
        self.site.insert(
            "Webhook Request Log",
            {
                "webhook": webhook.get("name"),
                "reference_doctype": document.get("doctype"),
                "reference_document": document.get("name"),
                "user": "Administrator",
                "url": url,
                "headers": json.dumps(dict(headers), indent=1, sort_keys=True) if headers else None,
                "data": json.dumps(data, indent=1, sort_keys=True, default=str) if data else None,
                "response": attempt.response,
                "error": attempt.error,
            },
        )
