"""One simulated Frappe site: its documents, its API keys, its faults, and what it was asked.

Thread-safe: one lock around every read and write, as one database would serialise them.
Each method returns an `Answer` (or raises `FrappeError`, answered in Frappe's shape), so
the HTTP server only writes answers out.

Rules it enforces, as Frappe does:
- `Authorization: token <api_key>:<api_secret>`; no header is the Guest user, refused
  with 403 PermissionError; a wrong pair is 401 AuthenticationError. A key may be limited
  to some DocTypes (403 PermissionError for the others).
- Create: a name from the DocType's autoname; a name or unique value taken is 409
  DuplicateEntryError; a Link to a missing document is 417 LinkValidationError; a
  mandatory field missing is 417 MandatoryError. `docstatus: 1` in the body submits.
- Update (PUT, partial): on a submitted document (docstatus 1) a changed field that is not
  `allow_on_submit` is 417 UpdateAfterSubmitError; a `modified` that is not the stored one
  is 417 TimestampMismatchError; `docstatus` may go 0 -> 1 (submit) or 1 -> 2 (cancel) only.
- Read: 404 DoesNotExistError for an unknown name; lists filter, order and page as
  `relay`'s callers rely on (`erpnext_simulator.filters`).
"""

import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from erpnext_simulator import filters
from erpnext_simulator.answers import Answer, FrappeError, data
from erpnext_simulator.doctypes import DEFAULT_DOCTYPES, STANDARD_FIELDS, DocTypeMeta

DEFAULT_API_KEY = "erpnext-sim-key"
DEFAULT_API_SECRET = "erpnext-sim-secret"  # noqa: S105 - the simulator's published test credential
ADMINISTRATOR = "Administrator"

DocEventListener = Callable[[str, str, dict[str, Any]], None]
"""(event, doctype, document): called after a write commits, outside the site's lock."""


@dataclass(frozen=True)
class ApiKey:
    key: str
    secret: str
    user: str = ADMINISTRATOR
    doctypes: frozenset[str] | None = None
    """The DocTypes this key's user may read and write; None: all of them."""


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int
    at: float


@dataclass
class _Site:
    documents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    counters: "dict[str, itertools.count[int]]" = field(default_factory=dict)


class FrappeSite:
    def __init__(
        self,
        *,
        api_keys: Iterable[ApiKey] = (ApiKey(DEFAULT_API_KEY, DEFAULT_API_SECRET),),
        doctypes: Iterable[DocTypeMeta] = DEFAULT_DOCTYPES,
        validate_links: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._keys = {key.key: key for key in api_keys}
        self._meta = {meta.name: meta for meta in doctypes}
        self._site = _Site()
        self._clock = clock
        self.validate_links = validate_links
        self.requests: list[RequestRecord] = []
        self._listeners: list[DocEventListener] = []
        self.controls: dict[str, Any] = {}
        """What the control API may reach beyond the site, by name (e.g. "webhooks": the runner)."""

    # ---- configuration ----

    def add_api_key(self, key: ApiKey) -> None:
        with self._lock:
            self._keys[key.key] = key

    def define(self, meta: DocTypeMeta) -> None:
        """Add or replace a DocType's rules (e.g. from the pack's exported DocType JSON)."""
        with self._lock:
            self._meta[meta.name] = meta

    def on_event(self, listener: DocEventListener) -> None:
        """Hear `after_insert`, `on_update`, `on_submit`, `on_cancel` and `on_update_after_submit`."""
        self._listeners.append(listener)

    def meta(self, doctype: str) -> DocTypeMeta:
        return self._meta.get(doctype) or DocTypeMeta(doctype)

    # ---- the REST API ----

    def authenticate(self, authorization: str | None, doctype: str) -> str:
        """The user a request acts as, or FrappeError (403 Guest, 401 wrong key, 403 no permission)."""
        if not authorization:
            raise FrappeError("PermissionError", f"Insufficient Permission for {doctype}")
        scheme, _, credentials = authorization.partition(" ")
        key_text, _, secret = credentials.strip().partition(":")
        with self._lock:
            key = self._keys.get(key_text)
        if scheme.lower() != "token" or key is None or not secrets.compare_digest(key.secret, secret):
            raise FrappeError("AuthenticationError", "Invalid API Key or API Secret")
        if key.doctypes is not None and doctype not in key.doctypes:
            raise FrappeError("PermissionError", f"Insufficient Permission for {doctype}")
        return key.user

    def get_list(self, doctype: str, query: Mapping[str, str]) -> Answer:
        wanted = filters.parse_filters(query.get("filters"))
        fields = filters.parse_fields(query.get("fields"))
        with self._lock:
            found = [
                dict(doc)
                for doc in self._site.documents.get(doctype, {}).values()
                if filters.matches(doc, wanted)
            ]
        found = filters.ordered(found, query.get("order_by"))
        return data([filters.project(doc, fields) for doc in filters.page(found, query)])

    def get(self, doctype: str, name: str) -> Answer:
        with self._lock:
            return data(_copy(self._find(doctype, name)))

    def insert(self, doctype: str, body: Mapping[str, Any], *, user: str = ADMINISTRATOR) -> Answer:
        events: list[str] = []
        with self._lock:
            document = self._insert(doctype, body, user, events)
        self._notify(events, doctype, document)
        return data(document)

    def update(
        self, doctype: str, name: str, body: Mapping[str, Any], *, user: str = ADMINISTRATOR
    ) -> Answer:
        events: list[str] = []
        with self._lock:
            document = self._update(doctype, name, body, user, events)
        self._notify(events, doctype, document)
        return data(document)

    # ---- for tests and the control API ----

    def documents(self, doctype: str) -> list[dict[str, Any]]:
        """Every document of `doctype`, oldest first, as copies."""
        with self._lock:
            return [_copy(doc) for doc in self._site.documents.get(doctype, {}).values()]

    def document(self, doctype: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._site.documents.get(doctype, {}).get(name)
            return _copy(found) if found else None

    def db_set(self, doctype: str, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """`doc.db_set(values)`: writes straight to the row, past every validation (as India
        Compliance sets `irn` and `einvoice_status`), and fires `on_change` only."""
        with self._lock:
            document = self._find(doctype, name)
            document.update(values)
            document["modified"] = self._now()
            copy = _copy(document)
        self._notify(["on_change"], doctype, copy)
        return copy

    def record_request(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, path, status, self._clock()))

    def reset(self) -> None:
        with self._lock:
            self._site = _Site()
            self.requests.clear()

    # ---- inside the lock ----

    def _find(self, doctype: str, name: str) -> dict[str, Any]:
        found = self._site.documents.get(doctype, {}).get(name)
        if found is None:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
        return found

    def _insert(self, doctype: str, body: Mapping[str, Any], user: str, events: list[str]) -> dict[str, Any]:
        meta = self.meta(doctype)
        values = self._writable(meta, body)
        docstatus = int(body.get("docstatus") or 0)
        if docstatus == 1 and not meta.is_submittable:
            raise FrappeError("ValidationError", f"{doctype} is not submittable")
        if docstatus not in (0, 1):
            raise FrappeError("ValidationError", "Cannot create a cancelled document")
        self._validate(meta, values)
        table = self._site.documents.setdefault(doctype, {})
        name = self._name(meta, body, values)
        if name in table:
            raise FrappeError("DuplicateEntryError", f"{doctype} {name} already exists")
        now = self._now()
        document = {
            **values,
            "name": name,
            "doctype": doctype,
            "owner": user,
            "modified_by": user,
            "creation": now,
            "modified": now,
            "docstatus": docstatus,
            "idx": 0,
        }
        table[name] = document
        # Frappe's insert: after_insert, then on_update (a draft) or on_submit, then on_change.
        events += ["after_insert", "on_submit" if docstatus == 1 else "on_update", "on_change"]
        return _copy(document)

    def _update(
        self, doctype: str, name: str, body: Mapping[str, Any], user: str, events: list[str]
    ) -> dict[str, Any]:
        meta = self.meta(doctype)
        document = self._find(doctype, name)
        if "modified" in body and str(body["modified"]) != str(document["modified"]):
            raise FrappeError(
                "TimestampMismatchError",
                "Document has been modified after you have opened it. Please refresh to get the latest document.",
            )
        values = self._writable(meta, body)
        before = int(document["docstatus"])
        after = int(body.get("docstatus", before) or 0)
        if (before, after) not in ((0, 0), (0, 1), (1, 1), (1, 2), (2, 2)):
            raise FrappeError("ValidationError", f"Cannot change docstatus from {before} to {after}")
        if before == 2:
            raise FrappeError("ValidationError", "Cannot edit cancelled document")
        if before == 1:
            for fieldname, value in values.items():
                if fieldname not in meta.allow_on_submit and document.get(fieldname) != value:
                    raise FrappeError(
                        "UpdateAfterSubmitError",
                        f"Not allowed to change {fieldname} after submission from"
                        f" {document.get(fieldname)!r} to {value!r}",
                    )
        merged = {**document, **values}
        self._validate(meta, merged, exclude=name)
        merged.update(docstatus=after, modified=self._now(), modified_by=user)
        document.clear()
        document.update(merged)
        if before == 0:
            events.append("on_submit" if after == 1 else "on_update")
        elif after == 2:
            events.append("on_cancel")
        else:
            events.append("on_update_after_submit")
        events.append("on_change")
        return _copy(document)

    def _writable(self, meta: DocTypeMeta, body: Mapping[str, Any]) -> dict[str, Any]:
        values = {key: value for key, value in body.items() if key not in STANDARD_FIELDS}
        if meta.fields is not None:
            values = {key: value for key, value in values.items() if key in meta.fields}
        return values

    def _validate(self, meta: DocTypeMeta, values: Mapping[str, Any], exclude: str | None = None) -> None:
        missing = sorted(field for field in meta.mandatory if values.get(field) in (None, ""))
        if missing:
            raise FrappeError("MandatoryError", f"[{meta.name}]: {', '.join(missing)}")
        if self.validate_links:
            for fieldname, target in meta.links.items():
                value = values.get(fieldname)
                if value and value not in self._site.documents.get(target, {}):
                    raise FrappeError("LinkValidationError", f"Could not find {fieldname}: {value}")
        table = self._site.documents.get(meta.name, {})
        for fieldname in meta.unique:
            value = values.get(fieldname)
            if value not in (None, "") and any(
                doc.get(fieldname) == value for name, doc in table.items() if name != exclude
            ):
                raise FrappeError(
                    "DuplicateEntryError", f"{meta.name} with {fieldname} {value} already exists"
                )

    def _name(self, meta: DocTypeMeta, body: Mapping[str, Any], values: Mapping[str, Any]) -> str:
        if meta.autoname.startswith("field:"):
            value = values.get(meta.autoname.removeprefix("field:"))
            if value in (None, ""):
                raise FrappeError("MandatoryError", f"[{meta.name}]: {meta.autoname.removeprefix('field:')}")
            return str(value)
        if body.get("name"):
            return str(body["name"])  # a seeded document keeps its name (SINV-26-00042 in the fixtures)
        counter = self._site.counters.setdefault(meta.name, itertools.count(1))
        if meta.autoname == "hash":
            return secrets.token_hex(5)
        prefix = meta.autoname.split(".#")[0].replace(".YY.", datetime.now(UTC).strftime("%y")).rstrip(".")
        return f"{prefix}{next(counter):05d}"

    def _now(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def _notify(self, events: list[str], doctype: str, document: dict[str, Any]) -> None:
        for event in events:
            for listener in self._listeners:
                listener(event, doctype, _copy(document))


def _copy(document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: [dict(row) for row in value] if isinstance(value, list) else value
        for key, value in document.items()
    }
