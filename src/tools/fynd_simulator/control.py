"""A typed client for a simulator's `/_sim/` control API, for code in another process.

    control = SimulatorControl("http://127.0.0.1:8900")
    control.wait_until_ready()
    control.configure_order("ORD-1", "pending", confirm_after_attempts=2)
    control.add_faults({"kind": "status", "status": 503})
    ...
    assert control.invoice_count("ORD-1") == 1

http.client, one short-lived connection per request. Calls, orders and stats come back as the
same records (`fynd_simulator.records`) that `SimulatorState` returns in process.
"""

import http.client
import json
import time
from collections.abc import Mapping
from typing import Any, Unpack, cast
from urllib.parse import urlsplit

from fynd_simulator.orders import OrderOptions
from fynd_simulator.records import CallRecord, OrderView, Stats


class SimulatorControlError(RuntimeError):
    """The simulator refused a control request (status and its problem detail attached)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"simulator answered {status}: {detail}")
        self.status = status
        self.detail = detail


class SimulatorControl:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._timeout = timeout

    def health(self) -> bool:
        try:
            return bool(self._request("GET", "health").get("ok"))
        except OSError:
            return False

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Poll /_sim/health until it answers; raises TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.health():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no simulator answering at {self.url}")
            time.sleep(0.05)

    def configure_orders(self, orders: Mapping[str, Mapping[str, object]]) -> list[str]:
        answer = self._request("POST", "orders", {"orders": orders})
        return cast(list[str], answer["configured"])

    def configure_order(
        self, order_id: str, state: str | None = None, **options: Unpack[OrderOptions]
    ) -> None:
        self.configure_orders({order_id: options if state is None else {"state": state, **options}})

    def add_faults(self, *faults: Mapping[str, object]) -> int:
        """Queue faults in order; returns how many are pending now."""
        return int(self._request("POST", "faults", {"faults": list(faults)})["pending"])

    def faults(self) -> list[dict[str, object]]:
        return cast(list[dict[str, object]], self._request("GET", "faults")["faults"])

    def calls(self) -> list[CallRecord]:
        return [CallRecord.model_validate(call) for call in self._request("GET", "calls")["calls"]]

    def orders(self) -> dict[str, OrderView]:
        orders = self._request("GET", "orders")["orders"]
        return {order_id: OrderView.model_validate(order) for order_id, order in orders.items()}

    def invoice_count(self, order_id: str) -> int:
        order = self.orders().get(order_id)
        return 0 if order is None else order.invoice_count

    def stats(self) -> Stats:
        return Stats.model_validate(self._request("GET", "stats"))

    def configure(
        self,
        *,
        envelope: str | None = None,
        token_ttl: int | None = None,
        max_body_bytes: int | None = None,
        fault_rates: list[Mapping[str, object]] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Change what is given; returns the whole configuration now in force.

        `max_body_bytes`: Update Invoice answers 413 above it (0: no limit). `fault_rates`:
        `[{"rate": 0.04, "fault": {"kind": "commit_then_drop"}}, ...]`, drawn for calls that
        find no queued fault; `seed` makes the draws repeatable."""
        given = {
            "envelope": envelope,
            "token_ttl": token_ttl,
            "max_body_bytes": max_body_bytes,
            "fault_rates": fault_rates,
            "seed": seed,
        }
        return self._request("POST", "config", {k: v for k, v in given.items() if v is not None})

    def config(self) -> dict[str, Any]:
        return self._request("GET", "config")

    def add_credential(self, username: str, password: str, location_code: str | None = None) -> None:
        body = {"username": username, "password": password, "location_code": location_code}
        self._request("POST", "credentials", body)

    def expire_tokens(self) -> None:
        self._request("POST", "tokens/expire")

    def reset(self) -> None:
        self._request("POST", "reset")

    def _request(self, method: str, route: str, body: Mapping[str, object] | None = None) -> dict[str, Any]:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=self._timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, f"/_sim/{route}", payload, headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        answer = json.loads(data) if data else {}
        if response.status >= 400:
            raise SimulatorControlError(response.status, str(answer.get("detail", answer)))
        return cast(dict[str, Any], answer)
