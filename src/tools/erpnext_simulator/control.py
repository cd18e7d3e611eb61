"""The control API under `/_sim/`: no auth, JSON in and out, refused input answered 400.

| route | does |
| --- | --- |
| `GET /_sim/health` | `{"ok": true}` once the simulator serves |
| `POST /_sim/docs` | `{"doctype": "Sales Invoice", "docs": [{...}, ...]}` inserts as Administrator (events fire) |
| `GET /_sim/docs?doctype=X` | `{"docs": [...]}` every document of X, oldest first, child tables included |
| `POST /_sim/db_set` | `{"doctype", "name", "values": {...}}`: `doc.db_set`, past every validation |
| `POST /_sim/doctypes` | `{"doctype_json": {...}}`: enforce an exported DocType's rules (autoname, Links, `allow_on_submit`, ...) |
| `POST /_sim/faults` | `{"faults": [{"kind": "status", "status": 503, "count": 3}, ...]}` appends |
| `GET /_sim/faults` / `DELETE /_sim/faults` | the faults still pending / clear them |
| `GET /_sim/requests` | `{"requests": [{"method", "path", "status", "at"}]}` every REST call, oldest first |
| `POST /_sim/reset` | forget documents and requests (keeps DocTypes, keys and faults) |
| `POST /_sim/webhooks` | `{"undelivered_rate": 0.2, "seed": 7}`: that share of Frappe Webhook deliveries never reaches the relay (all attempts fail; rows stay in the Webhook Request Log). Only with a webhook runner (`make run`) |
| `POST /_sim/webhooks/join` | waits until every webhook delivery queued so far is done |
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from erpnext_simulator.answers import Answer, FrappeError
from erpnext_simulator.doctypes import DocTypeMeta
from erpnext_simulator.faults import Fault, Faults
from erpnext_simulator.site import FrappeSite

CONTROL_PREFIX = "/_sim/"

type _Route = Callable[[FrappeSite, Faults, Mapping[str, Any], Mapping[str, str]], Mapping[str, Any]]


def handle_control(site: FrappeSite, faults: Faults, method: str, path: str, raw: bytes) -> Answer:
    url = urlsplit(path)
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    route = _ROUTES.get((method, url.path.removeprefix(CONTROL_PREFIX).rstrip("/")))
    if route is None:
        return Answer(HTTPStatus.NOT_FOUND, {"detail": f"no control route {method} {url.path}"})
    try:
        body = json.loads(raw) if raw.strip() else {}
        if not isinstance(body, Mapping):
            raise ValueError("body must be a JSON object")
        return Answer(HTTPStatus.OK, route(site, faults, body, query))
    except FrappeError as error:
        return error.answer()
    except (ValueError, KeyError, TypeError) as error:
        return Answer(HTTPStatus.BAD_REQUEST, {"detail": str(error)})


def _insert(site: FrappeSite, _: Faults, body: Mapping[str, Any], __: Mapping[str, str]) -> Mapping[str, Any]:
    doctype = str(body["doctype"])
    names = [site.insert(doctype, doc).body["data"]["name"] for doc in body.get("docs", [])]  # type: ignore[index]
    return {"names": names}


def _docs(site: FrappeSite, _: Faults, __: Mapping[str, Any], query: Mapping[str, str]) -> Mapping[str, Any]:
    return {"docs": site.documents(query["doctype"])}


def _db_set(site: FrappeSite, _: Faults, body: Mapping[str, Any], __: Mapping[str, str]) -> Mapping[str, Any]:
    return {"doc": site.db_set(str(body["doctype"]), str(body["name"]), dict(body["values"]))}


def _doctype(
    site: FrappeSite, _: Faults, body: Mapping[str, Any], __: Mapping[str, str]
) -> Mapping[str, Any]:
    meta = DocTypeMeta.from_doctype_json(body["doctype_json"])
    site.define(meta)
    return {"doctype": meta.name}


def _add_faults(
    _: FrappeSite, faults: Faults, body: Mapping[str, Any], __: Mapping[str, str]
) -> Mapping[str, Any]:
    for item in body.get("faults", []):
        faults.add(Fault.from_json(item))
    return {"faults": [fault.to_json() for fault in faults.pending()]}


def _faults(
    _: FrappeSite, faults: Faults, __: Mapping[str, Any], ___: Mapping[str, str]
) -> Mapping[str, Any]:
    return {"faults": [fault.to_json() for fault in faults.pending()]}


def _clear_faults(
    _: FrappeSite, faults: Faults, __: Mapping[str, Any], ___: Mapping[str, str]
) -> Mapping[str, Any]:
    faults.clear()
    return {"faults": []}


def _requests(
    site: FrappeSite, _: Faults, __: Mapping[str, Any], ___: Mapping[str, str]
) -> Mapping[str, Any]:
    return {"requests": [asdict(record) for record in list(site.requests)]}


def _reset(site: FrappeSite, _: Faults, __: Mapping[str, Any], ___: Mapping[str, str]) -> Mapping[str, Any]:
    site.reset()
    return {"ok": True}


def _webhooks(
    site: FrappeSite, _: Faults, body: Mapping[str, Any], __: Mapping[str, str]
) -> Mapping[str, Any]:
    runner = site.controls.get("webhooks")
    if runner is None:
        raise ValueError("no Frappe webhooks run on this site (start it with make run ERPNEXT_SIMULATOR=1)")
    if "undelivered_rate" in body:
        rate = float(body["undelivered_rate"])
        if not 0 <= rate <= 1:
            raise ValueError("undelivered_rate is a share between 0 and 1")
        runner.undelivered_rate = rate
    if "seed" in body:
        runner.reseed(int(body["seed"]))
    return {"undelivered_rate": runner.undelivered_rate}


def _join_webhooks(
    site: FrappeSite, _: Faults, __: Mapping[str, Any], ___: Mapping[str, str]
) -> Mapping[str, Any]:
    runner = site.controls.get("webhooks")
    if runner is not None:
        runner.join()
    return {"ok": True}


_ROUTES: dict[tuple[str, str], _Route] = {
    ("POST", "webhooks"): _webhooks,
    ("POST", "webhooks/join"): _join_webhooks,
    ("GET", "health"): lambda *_: {"ok": True},
    ("POST", "docs"): _insert,
    ("GET", "docs"): _docs,
    ("POST", "db_set"): _db_set,
    ("POST", "doctypes"): _doctype,
    ("POST", "faults"): _add_faults,
    ("GET", "faults"): _faults,
    ("DELETE", "faults"): _clear_faults,
    ("GET", "requests"): _requests,
    ("POST", "reset"): _reset,
}
