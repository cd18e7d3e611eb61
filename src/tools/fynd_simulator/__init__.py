"""A local stand-in for Fynd Konnect's token, Update Invoice and Get Shipment Info endpoints.

Shipped with the relay for its own tests and `make run`, and for integrators who want to
see every Fynd answer without a Fynd account. The contract it follows is
`docs/fynd-update-invoice.md`; when that page changes, this package changes with it.

Endpoints, as Fynd's:

- `GET /aggregator/v1/token?username=<u>&password=<p>` -> `{"access_token", "expires_in"}`,
  401 for unknown credentials. Default company-level credentials: `relay-sim` /
  `relay-sim-password`; location-level credentials work for their own location only.
- `POST /oms/v3/shipment/invoiceUpdate[?locationCode=X]` with `x-access-token`: a JSON
  array of 1 to 20 invoices (`orderId`, `invoiceNumber`, `invoiceType` required), else
  400; a missing, unknown or expired token gets 401. Otherwise 200 with one error per
  failed order, in Fynd's camelCase shape or (configured) the snake_case `data`/`meta`
  envelope. With a body limit configured (`max_body_bytes`), a larger body gets a
  whole-call 413 and nothing is applied.
- `GET /oms/v3/shipment/info?orderId=<id>[&locationCode=X]` with `x-access-token`:
  `{"orders": [{"id", "orderStatus", "shipmentStatus", ...}]}` from the same order state
  (see `shipments.py`): `CREATED`/`placed` while pending, `CONFIRMED`/`bag_confirmed`,
  `PROCESSING`/`bag_invoiced` once invoiced, `CANCELLED`/`cancelled_customer`; a return
  shipment shows `return_bag_in_transit`, `return_bag_accepted`, `credit_note_generated`.

Any order id the simulator was not told about answers by its prefix, so a client can
send anything and still reach every code:

| prefix | answer |
| --- | --- |
| `CANCELLED-` | `IN401` (cancelled) |
| `UNKNOWN-` | `IN400` (not in the authorised location) |
| `BADINV-` | `IN422` (breaks the invoicing rules) |
| `INVOICED-` | `IN453` (already invoiced elsewhere) |
| `EARLY-` | `IN403` (not yet confirmed) for the first 2 contacts (invoices or Shipment Info reads), then success |
| `RETURN-` | a return shipment awaiting its credit note: a `return` invoice succeeds, a `sale` one gets `IN453`; return states in Shipment Info |
| anything else | success, once per `invoiceType`: a second `sale` invoice for the order gets `IN453`, and so does a second credit note; a credit note for an order invoiced here succeeds |

Orders configured through `/_sim/orders` (or `SimulatorState.configure_orders`) ignore
their prefix. The simulator keys what it applied by `orderId` and `invoiceType`, as the
relay keys its ledger: the first `sale` invoice and the first `return` (credit note) of an
order each succeed, and a repeat of either gets `IN453`. An order configured or named as
invoiced (`invoiced`, `INVOICED-`) was invoiced elsewhere and answers `IN453` to both; an
`invoiceType` other than those two gets `IN422`. An
order configured with a `location` answers `IN400` to a token scoped to another
location (a location-level token, or a company-level one with a `locationCode`).

Faults (`faults.py`), records and the control API (`admin.py`) are described in their
modules. Run it with `python -m fynd_simulator --port 8900`.
"""

from fynd_simulator.control import SimulatorControl, SimulatorControlError
from fynd_simulator.faults import (
    UNCONFIRMED_SHAPES,
    CommitThenDropFault,
    ExpireTokensFault,
    Fault,
    LatencyFault,
    NovelStatusFault,
    StatusFault,
    UnconfirmedFault,
)
from fynd_simulator.invoices import MAX_INVOICES_PER_CALL
from fynd_simulator.orders import ErrorCode, OrderState
from fynd_simulator.records import AppliedInvoice, CallRecord, OrderOutcome, OrderView, Stats
from fynd_simulator.replies import SimulatorConfigError
from fynd_simulator.server import INVOICE_PATH, SHIPMENT_INFO_PATH, TOKEN_PATH
from fynd_simulator.simulator import FyndSimulator
from fynd_simulator.state import SimulatorState
from fynd_simulator.tokens import (
    DEFAULT_PASSWORD,
    DEFAULT_TOKEN_TTL,
    DEFAULT_USERNAME,
    Credential,
)

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_TOKEN_TTL",
    "DEFAULT_USERNAME",
    "INVOICE_PATH",
    "MAX_INVOICES_PER_CALL",
    "SHIPMENT_INFO_PATH",
    "TOKEN_PATH",
    "UNCONFIRMED_SHAPES",
    "AppliedInvoice",
    "CallRecord",
    "CommitThenDropFault",
    "Credential",
    "ErrorCode",
    "ExpireTokensFault",
    "Fault",
    "FyndSimulator",
    "LatencyFault",
    "NovelStatusFault",
    "OrderOutcome",
    "OrderState",
    "OrderView",
    "SimulatorConfigError",
    "SimulatorControl",
    "SimulatorControlError",
    "SimulatorState",
    "Stats",
    "StatusFault",
    "UnconfirmedFault",
]
