"""The control API under `/_sim/`: JSON in, JSON out, refused input answered with 400.

| route | does |
| --- | --- |
| `GET /_sim/health` | `{"ok": true}` once the simulator serves |
| `POST /_sim/orders` | `{"orders": {"ORD-1": {"state": "pending", "confirm_after_attempts": 2}}}` |
| `GET /_sim/orders` | `{"orders": {id: {state, location, attempts, invoice_count, ...}}}` |
| `POST /_sim/faults` | `{"faults": [{"kind": "status", "status": 503}, ...]}` appends, FIFO |
| `GET /_sim/faults` | the faults still queued |
| `GET /_sim/calls` | `{"calls": [...]}` every Update Invoice call, oldest first |
| `GET /_sim/stats` | token requests, calls, orders received, invoiced, duplicates, shipment reads, ... |
| `GET`/`POST /_sim/config` | `{"envelope": "camel" or "snake", "token_ttl": seconds, "max_body_bytes": n (0: off), "fault_rates": [{"rate": 0.04, "fault": {...}}], "seed": n}` |
| `POST /_sim/credentials` | `{"username", "password", "location_code"?}` adds a credential |
| `POST /_sim/tokens/expire` | every issued token stops working now |
| `POST /_sim/reset` | forget orders, tokens, faults and records (keeps the config) |
"""

import json
from collections.abc import Callable, Mapping
from http import HTTPStatus

from fynd_simulator.faults import fault_rate_to_json, fault_to_json
from fynd_simulator.records import Record
from fynd_simulator.replies import Reply, SimulatorConfigError, ok, problem
from fynd_simulator.state import SimulatorState
from fynd_simulator.tokens import Credential

ADMIN_PREFIX = "/_sim/"

type _Route = Callable[[SimulatorState, Mapping[str, object]], Mapping[str, object]]


def handle_admin(state: SimulatorState, method: str, path: str, raw_body: bytes) -> Reply:
    routes = _ROUTES.get(path.removeprefix(ADMIN_PREFIX).rstrip("/"))
    if routes is None:
        return problem(HTTPStatus.NOT_FOUND, f"no control route {path}")
    route = routes.get(method)
    if route is None:
        allow = ", ".join(sorted(routes))
        return problem(HTTPStatus.METHOD_NOT_ALLOWED, f"use {allow}", (("Allow", allow),))
    try:
        body = json.loads(raw_body) if raw_body.strip() else {}
    except ValueError:
        return problem(HTTPStatus.BAD_REQUEST, "body is not JSON")
    try:
        if not isinstance(body, Mapping):
            raise SimulatorConfigError("body must be a JSON object")
        return ok(route(state, body))
    except SimulatorConfigError as error:
        return problem(HTTPStatus.BAD_REQUEST, str(error))


def _json(record: Record) -> dict[str, object]:
    return record.model_dump(by_alias=True, mode="json")


def _configure_orders(state: SimulatorState, body: Mapping[str, object]) -> Mapping[str, object]:
    orders = body.get("orders")
    if not isinstance(orders, Mapping) or not all(isinstance(v, Mapping) for v in orders.values()):
        raise SimulatorConfigError('expected {"orders": {"<orderId>": {...}, ...}}')
    return {"configured": state.configure_orders(orders)}


def _add_faults(state: SimulatorState, body: Mapping[str, object]) -> Mapping[str, object]:
    faults = body.get("faults")
    if not isinstance(faults, list):
        raise SimulatorConfigError('expected {"faults": [{"kind": ...}, ...]}')
    return {"pending": state.add_faults(faults)}


def _configure(state: SimulatorState, body: Mapping[str, object]) -> Mapping[str, object]:
    unknown = set(body) - {"envelope", "token_ttl", "max_body_bytes", "fault_rates", "seed"}
    if unknown:
        raise SimulatorConfigError(f"unknown keys {sorted(unknown)}")
    envelope, ttl = body.get("envelope"), body.get("token_ttl")
    if envelope is not None and not isinstance(envelope, str):
        raise SimulatorConfigError("envelope must be a string")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)):
        raise SimulatorConfigError("token_ttl must be whole seconds")
    limit, seed = body.get("max_body_bytes"), body.get("seed")
    for name, value in (("max_body_bytes", limit), ("seed", seed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SimulatorConfigError(f"{name} must be an integer")
    state.configure(
        envelope=envelope,
        token_ttl=ttl,
        max_body_bytes=limit,  # type: ignore[arg-type]
        fault_rates=body.get("fault_rates"),
        seed=seed,  # type: ignore[arg-type]
    )
    return _config(state, body)


def _config(state: SimulatorState, _: Mapping[str, object]) -> Mapping[str, object]:
    return {
        "envelope": state.envelope,
        "token_ttl": state.token_ttl,
        "max_body_bytes": state.max_body_bytes or 0,
        "fault_rates": [fault_rate_to_json(rate) for rate in state.fault_rates],
        "seed": state.seed,
    }


def _add_credential(state: SimulatorState, body: Mapping[str, object]) -> Mapping[str, object]:
    username, password = body.get("username"), body.get("password")
    location = body.get("location_code")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise SimulatorConfigError("username and password must be strings")
    if location is not None and not isinstance(location, str):
        raise SimulatorConfigError("location_code must be a string")
    state.add_credential(Credential(username, password, location))
    return {"added": username, "location_code": location}


def _expire_tokens(state: SimulatorState, _: Mapping[str, object]) -> Mapping[str, object]:
    state.expire_tokens()
    return {"expired": True}


def _reset(state: SimulatorState, _: Mapping[str, object]) -> Mapping[str, object]:
    state.reset()
    return {"reset": True}


_ROUTES: Mapping[str, Mapping[str, _Route]] = {
    "health": {"GET": lambda s, _: {"ok": True}},
    "orders": {
        "GET": lambda s, _: {"orders": {k: _json(v) for k, v in s.orders().items()}},
        "POST": _configure_orders,
    },
    "faults": {
        "GET": lambda s, _: {"faults": [fault_to_json(f) for f in s.pending_faults()]},
        "POST": _add_faults,
    },
    "calls": {"GET": lambda s, _: {"calls": [_json(c) for c in s.calls()]}},
    "stats": {"GET": lambda s, _: _json(s.stats())},
    "config": {"GET": _config, "POST": _configure},
    "credentials": {"POST": _add_credential},
    "tokens/expire": {"POST": _expire_tokens},
    "reset": {"POST": _reset},
}
