"""The simulator's whole model: credentials, tokens, orders, queued faults and records.

No I/O and no sleeping: the clock is injected, so tests can move time by hand. Every
public method takes one lock, so the threaded HTTP server can call it from any thread.
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TypedDict, Unpack

from fynd_simulator.faults import (
    UNCONFIRMED_SHAPES,
    CommitThenDropFault,
    Endpoint,
    ExpireTokensFault,
    Fault,
    FaultQueue,
    FaultRate,
    FaultRates,
    NovelStatusFault,
    StatusFault,
    UnconfirmedFault,
    parse_fault_rates,
)
from fynd_simulator.invoices import (
    ENVELOPES,
    NOT_JSON,
    Envelope,
    PayloadError,
    decode_body,
    order_ids_in,
    parse_invoices,
    render_result,
    render_unconfirmed,
)
from fynd_simulator.orders import Order, OrderOptions, OrderState, order_by_prefix, order_from_config
from fynd_simulator.records import CallRecord, OrderOutcome, OrderView, Stats
from fynd_simulator.replies import DROPPED, Reply, SimulatorConfigError, ok, problem
from fynd_simulator.shipments import shipment_entry
from fynd_simulator.tokens import (
    DEFAULT_PASSWORD,
    DEFAULT_TOKEN_TTL,
    DEFAULT_USERNAME,
    Credential,
    TokenIssuer,
)


class StateOptions(TypedDict, total=False):
    """SimulatorState's keyword arguments, which FyndSimulator passes on."""

    username: str
    password: str
    token_ttl: int
    location_credentials: Iterable[Credential]
    envelope: Envelope
    max_body_bytes: int | None
    clock: Callable[[], float]


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
        max_body_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`max_body_bytes`: see configure (None or 0: no limit)."""
        self._lock = threading.Lock()
        self._clock = clock
        self._tokens = TokenIssuer(
            [Credential(username, password), *location_credentials], DEFAULT_TOKEN_TTL, clock
        )
        self._envelope: Envelope = "camel"
        self._max_body_bytes: int | None = None
        self._rates = FaultRates()
        self._novel_values = 0  # never reset: a novel status is never repeated
        self.configure(token_ttl=token_ttl, envelope=envelope, max_body_bytes=max_body_bytes)
        self._reset()

    def _reset(self) -> None:
        self._tokens.expire_all()
        self._orders: dict[str, Order] = {}
        self._faults = FaultQueue()
        self._calls: list[CallRecord] = []
        self._token_requests = 0
        self._tokens_issued = 0
        self._shipment_reads = 0

    def reset(self) -> None:
        """Forget orders, tokens, queued faults and records; keep credentials and configuration
        (TTL, envelope, body limit, fault rates)."""
        with self._lock:
            self._reset()

    # --- configuration -------------------------------------------------------------

    def configure(
        self,
        *,
        token_ttl: int | None = None,
        envelope: str | None = None,
        max_body_bytes: int | None = None,
        fault_rates: object = None,
        seed: int | None = None,
    ) -> None:
        """Change what is given, all or nothing. `max_body_bytes`: Update Invoice answers 413 to
        a larger body (0 turns the limit off). `fault_rates`: see faults.FaultRates; `seed`
        restarts its generator."""
        if max_body_bytes is not None and (
            isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 0
        ):
            raise SimulatorConfigError("max_body_bytes must be a whole number of bytes >= 0 (0: no limit)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SimulatorConfigError("seed must be an integer")
        rates = None if fault_rates is None else parse_fault_rates(fault_rates)
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
            if max_body_bytes is not None:
                self._max_body_bytes = max_body_bytes or None
            if rates is not None:
                self._rates.rates = rates
            if seed is not None:
                self._rates.reseed(seed)

    @property
    def max_body_bytes(self) -> int | None:
        return self._max_body_bytes

    @property
    def fault_rates(self) -> tuple[FaultRate, ...]:
        return self._rates.rates

    @property
    def seed(self) -> int | None:
        return self._rates.seed

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
        self, order_id: str, state: OrderState | str | None = None, **options: Unpack[OrderOptions]
    ) -> None:
        """One order, as configure_orders takes it (see orders.order_from_config)."""
        self.configure_orders({order_id: options if state is None else {"state": str(state), **options}})

    def add_faults(self, faults: Iterable[Fault | Mapping[str, object]]) -> int:
        """Queue faults in order (all or nothing); returns how many are now pending."""
        with self._lock:
            return self._faults.extend(faults)

    def take_fault(self, endpoint: Endpoint) -> Fault | None:
        """Remove and return the oldest queued fault meant for this endpoint; with none queued,
        draw one from the configured fault rates (often None)."""
        with self._lock:
            return self._faults.take(endpoint) or self._rates.draw(endpoint)

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return self._faults.pending()

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.expire_all()

    # --- the three Fynd endpoints --------------------------------------------------

    def token_request(self, username: str, password: str, fault: Fault | None = None) -> Reply:
        with self._lock:
            self._token_requests += 1
            if (refused := self._fault_first(fault)) is not None:
                return refused
            token = self._tokens.issue(username, password)
            if token is None:
                reply = problem(HTTPStatus.UNAUTHORIZED, "unknown username or password")
            else:
                self._tokens_issued += 1
                reply = ok({"access_token": token, "expires_in": self._tokens.ttl})
            return DROPPED if isinstance(fault, CommitThenDropFault) else reply

    def _fault_first(self, fault: Fault | None) -> Reply | None:
        """What a fault does before the endpoint reads the request: a status fault is the whole
        answer; an expire-tokens fault expires every token, then the request goes on."""
        if isinstance(fault, StatusFault):
            return _status_reply(fault)
        if isinstance(fault, ExpireTokensFault):
            self._tokens.expire_all()
        return None

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
            limit = self._max_body_bytes
            if (refused := self._fault_first(fault)) is not None:
                reply = refused
            elif limit is not None and len(raw_body) > limit:
                # A front end refuses it before Fynd reads it: a whole-call 413, nothing applied.
                reply = problem(
                    HTTPStatus.CONTENT_TOO_LARGE, f"body of {len(raw_body)} bytes is over {limit}"
                )
            else:
                commit = not isinstance(fault, UnconfirmedFault) or fault.commit
                reply, outcomes = self._invoice(token, location_code, body, commit=commit)
                if isinstance(fault, CommitThenDropFault):
                    reply = DROPPED
                elif isinstance(fault, UnconfirmedFault) and reply.status == HTTPStatus.OK:
                    shape = (
                        self._rates.random.choice(UNCONFIRMED_SHAPES) if fault.shape == "any" else fault.shape
                    )
                    reply = ok(render_unconfirmed(shape, outcomes, self._envelope))
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
        self, token: str | None, location_code: str | None, body: object, *, commit: bool = True
    ) -> tuple[Reply, list[OrderOutcome]]:
        grant = self._tokens.authorise(token)
        if grant is None:
            return problem(HTTPStatus.UNAUTHORIZED, "missing, unknown or expired token"), []
        try:
            invoices = parse_invoices(body)
        except PayloadError as error:
            return problem(HTTPStatus.BAD_REQUEST, str(error)), []
        if not commit:
            return ok({}), []
        # A location-level token is scoped to its own location, whatever the query says.
        location = grant.location_code or location_code
        now = self._clock()
        outcomes = []
        for invoice in invoices:
            order = self._orders.get(invoice.order_id)
            if order is None:
                order = self._orders[invoice.order_id] = order_by_prefix(invoice.order_id, now)
            code = order.invoice(invoice.invoice_number, invoice.invoice_type, location, now)
            outcomes.append(OrderOutcome(order_id=invoice.order_id, code=code))
        return ok(render_result(outcomes, self._envelope)), outcomes

    def shipment_info(
        self, *, query: Mapping[str, str], token: str | None, fault: Fault | None = None
    ) -> Reply:
        """Get Shipment Info for `query["orderId"]` (see shipments.py)."""
        with self._lock:
            self._shipment_reads += 1
            if (refused := self._fault_first(fault)) is not None:
                return refused
            grant = self._tokens.authorise(token)
            if grant is None:
                return problem(HTTPStatus.UNAUTHORIZED, "missing, unknown or expired token")
            order_id = query.get("orderId")
            if not order_id:
                return problem(HTTPStatus.BAD_REQUEST, "orderId or orderStatus is mandatory")
            location = grant.location_code or query.get("locationCode") or None
            now = self._clock()
            order = self._orders.get(order_id)
            if order is None:
                order = self._orders[order_id] = order_by_prefix(order_id, now)
            novel = fault if isinstance(fault, NovelStatusFault) else None
            if novel is not None:
                self._novel_values += 1
            entry = shipment_entry(order_id, order, now, novel, self._novel_values)
            if location is not None and order.location is not None and location != order.location:
                entry = None  # not in the authorised location: Fynd shows nothing
            reply = ok({"orders": [] if entry is None else [entry]})
            return DROPPED if isinstance(fault, CommitThenDropFault) else reply

    # --- what tests read -------------------------------------------------------------

    def calls(self) -> list[CallRecord]:
        """Every Update Invoice call received, oldest first."""
        with self._lock:
            return list(self._calls)

    def orders(self) -> dict[str, OrderView]:
        """Every order configured or seen, with its state and invoice count."""
        with self._lock:
            return {order_id: OrderView.of(order) for order_id, order in self._orders.items()}

    def order(self, order_id: str) -> OrderView | None:
        with self._lock:
            order = self._orders.get(order_id)
            return None if order is None else OrderView.of(order)

    def invoice_count(self, order_id: str) -> int:
        """How many invoices the simulator applied to this order (1 for exactly once)."""
        view = self.order(order_id)
        return 0 if view is None else view.invoice_count

    def stats(self) -> Stats:
        with self._lock:
            return Stats.of(
                self._calls,
                self._token_requests,
                self._tokens_issued,
                len(self._faults.pending()),
                self._shipment_reads,
            )


def _status_reply(fault: StatusFault) -> Reply:
    headers = () if fault.retry_after is None else (("Retry-After", str(fault.retry_after)),)
    return problem(fault.status, "injected fault", headers)
