"""The simulator's whole model: credentials, tokens, orders, queued faults and records.

No I/O and no sleeping: the clock is injected, so tests can move time by hand. Every
public method takes one lock, so the threaded HTTP server can call it from any thread.
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus

from fynd_simulator.faults import (
    CommitThenDropFault,
    Endpoint,
    ExpireTokensFault,
    Fault,
    FaultQueue,
    StatusFault,
)
from fynd_simulator.invoices import (
    ENVELOPES,
    NOT_JSON,
    Envelope,
    OrderOutcome,
    PayloadError,
    decode_body,
    order_ids_in,
    parse_invoices,
    render_result,
)
from fynd_simulator.orders import Order, OrderState, order_by_prefix, order_from_config
from fynd_simulator.records import CallRecord, OrderView, Stats
from fynd_simulator.replies import DROPPED, Reply, SimulatorConfigError, ok, problem
from fynd_simulator.tokens import (
    DEFAULT_PASSWORD,
    DEFAULT_TOKEN_TTL,
    DEFAULT_USERNAME,
    Credential,
    TokenIssuer,
)


class SimulatorState:
    """Everything the simulator knows and answers; the HTTP server is a thin shell on it."""

    def __init__(
        self,
        *,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        token_ttl: int = DEFAULT_TOKEN_TTL,
        location_credentials: Iterable[Credential] = (),
        envelope: Envelope = "camel",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._tokens = TokenIssuer(
            [Credential(username, password), *location_credentials], DEFAULT_TOKEN_TTL, clock
        )
        self._envelope: Envelope = "camel"
        self.configure(token_ttl=token_ttl, envelope=envelope)
        self._reset()

    def _reset(self) -> None:
        self._tokens.expire_all()
        self._orders: dict[str, Order] = {}
        self._faults = FaultQueue()
        self._calls: list[CallRecord] = []
        self._token_requests = 0
        self._tokens_issued = 0

    def reset(self) -> None:
        """Forget orders, tokens, faults and records; keep credentials, TTL and envelope."""
        with self._lock:
            self._reset()

    # --- configuration -------------------------------------------------------------

    def configure(self, *, token_ttl: int | None = None, envelope: str | None = None) -> None:
        if token_ttl is not None and (
            isinstance(token_ttl, bool) or not isinstance(token_ttl, int) or token_ttl < 1
        ):
            raise SimulatorConfigError("token_ttl must be a whole number of seconds >= 1")
        if envelope is not None and envelope not in ENVELOPES:
            raise SimulatorConfigError(f"envelope must be one of {list(ENVELOPES)}")
        with self._lock:
            if token_ttl is not None:
                self._tokens.ttl = token_ttl
            if envelope is not None:
                self._envelope = "snake" if envelope == "snake" else "camel"

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    @property
    def token_ttl(self) -> int:
        return self._tokens.ttl

    def add_credential(self, credential: Credential) -> None:
        with self._lock:
            self._tokens.credentials.append(credential)

    def configure_orders(self, orders: Mapping[str, Mapping[str, object]]) -> list[str]:
        """Set orders by id (replacing anything known about them); all or nothing."""
        now = self._clock()
        built = {order_id: order_from_config(order_id, cfg, now) for order_id, cfg in orders.items()}
        with self._lock:
            self._orders.update(built)
        return list(built)

    def configure_order(
        self,
        order_id: str,
        state: OrderState | str | None = None,
        *,
        location: str | None = None,
        confirm_after_attempts: int | None = None,
        confirm_after_seconds: float | None = None,
    ) -> None:
        given = {
            "state": None if state is None else str(state),
            "location": location,
            "confirm_after_attempts": confirm_after_attempts,
            "confirm_after_seconds": confirm_after_seconds,
        }
        self.configure_orders({order_id: {k: v for k, v in given.items() if v is not None}})

    def add_faults(self, faults: Iterable[Fault | Mapping[str, object]]) -> int:
        """Queue faults in order (all or nothing); returns how many are now pending."""
        with self._lock:
            return self._faults.extend(faults)

    def take_fault(self, endpoint: Endpoint) -> Fault | None:
        """Remove and return the oldest queued fault meant for this endpoint, if any."""
        with self._lock:
            return self._faults.take(endpoint)

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return self._faults.pending()

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.expire_all()

    # --- the two Fynd endpoints ----------------------------------------------------

    def token_request(self, username: str, password: str, fault: Fault | None = None) -> Reply:
        with self._lock:
            self._token_requests += 1
            if isinstance(fault, StatusFault):
                return _status_reply(fault)
            if isinstance(fault, ExpireTokensFault):
                self._tokens.expire_all()
            token = self._tokens.issue(username, password)
            if token is None:
                reply = problem(HTTPStatus.UNAUTHORIZED, "unknown username or password")
            else:
                self._tokens_issued += 1
                reply = ok({"access_token": token, "expires_in": self._tokens.ttl})
            return DROPPED if isinstance(fault, CommitThenDropFault) else reply

    def invoice_update(
        self,
        *,
        path: str,
        query: Mapping[str, str],
        token: str | None,
        raw_body: bytes,
        fault: Fault | None = None,
    ) -> Reply:
        body = decode_body(raw_body)
        location_code = query.get("locationCode") or None
        with self._lock:
            outcomes: list[OrderOutcome] = []
            if isinstance(fault, StatusFault):
                reply = _status_reply(fault)
            else:
                if isinstance(fault, ExpireTokensFault):
                    self._tokens.expire_all()
                reply, outcomes = self._invoice(token, location_code, body)
                if isinstance(fault, CommitThenDropFault):
                    reply = DROPPED
            self._calls.append(
                CallRecord(
                    seq=len(self._calls) + 1,
                    at=self._clock(),
                    path=path,
                    query=dict(query),
                    location_code=location_code,
                    token=token,
                    body=raw_body.decode(errors="replace") if body is NOT_JSON else body,
                    order_ids=tuple(order_ids_in(body)),
                    status=None if reply.drop else reply.status,
                    fault=None if fault is None else fault.kind,
                    outcomes=tuple(outcomes),
                )
            )
            return reply

    def _invoice(
        self, token: str | None, location_code: str | None, body: object
    ) -> tuple[Reply, list[OrderOutcome]]:
        grant = self._tokens.authorise(token)
        if grant is None:
            return problem(HTTPStatus.UNAUTHORIZED, "missing, unknown or expired token"), []
        try:
            invoices = parse_invoices(body)
        except PayloadError as error:
            return problem(HTTPStatus.BAD_REQUEST, str(error)), []
        # A location-level token is scoped to its own location, whatever the query says.
        location = grant.location_code or location_code
        now = self._clock()
        outcomes = []
        for invoice in invoices:
            order = self._orders.get(invoice.order_id)
            if order is None:
                order = self._orders[invoice.order_id] = order_by_prefix(invoice.order_id, now)
            code = order.invoice(invoice.invoice_number, invoice.invoice_type, location, now)
            outcomes.append(OrderOutcome(invoice.order_id, code))
        return ok(render_result(outcomes, self._envelope)), outcomes

    # --- what tests read -------------------------------------------------------------

    def calls(self) -> list[CallRecord]:
        """Every Update Invoice call received, oldest first."""
        with self._lock:
            return list(self._calls)

    def orders(self) -> dict[str, OrderView]:
        """Every order configured or seen, with its state and invoice count."""
        with self._lock:
            return {oid: OrderView.of(oid, order) for oid, order in self._orders.items()}

    def order(self, order_id: str) -> OrderView | None:
        with self._lock:
            order = self._orders.get(order_id)
            return None if order is None else OrderView.of(order_id, order)

    def invoice_count(self, order_id: str) -> int:
        """How many invoices the simulator applied to this order (1 for exactly once)."""
        view = self.order(order_id)
        return 0 if view is None else view.invoice_count

    def stats(self) -> Stats:
        with self._lock:
            return Stats.of(
                self._calls, self._token_requests, self._tokens_issued, len(self._faults.pending())
            )


def _status_reply(fault: StatusFault) -> Reply:
    headers = () if fault.retry_after is None else (("Retry-After", str(fault.retry_after)),)
    return problem(fault.status, "injected fault", headers)
