"""A local stand-in for an ERPNext (Frappe) site's REST resource API.

Beside the Fynd simulator, for the relay's ERPNext write-back and recovery, their tests and
`make run`; `docs/erpnext/simulator.md` describes it for integrators. What it follows is
Frappe's REST API as `docs/erpnext/simulator.md` lists it:

- `GET /api/resource/<DocType>` with `filters`, `fields`, `order_by`, `limit_start`,
  `limit_page_length` (default 20; 0 for all) -> `{"data": [...]}`;
- `GET /api/resource/<DocType>/<name>` -> `{"data": {...}}`;
- `POST /api/resource/<DocType>` (create; `docstatus: 1` submits) and
  `PUT /api/resource/<DocType>/<name>` (partial update) -> `{"data": {...}}`, 200;
- `Authorization: token <api_key>:<api_secret>`;
- errors 401/403/404/409/417 with Frappe's body (`exc_type`, `exception`, `_server_messages`).

Documents of any DocType can be created; the rules of Sales Invoice (submittable, nothing
`allow_on_submit` unless configured), e-Invoice Log (named by `irn`) and Webhook Request
Log are built in, and any DocType's rules can be read from its exported JSON. Faults
(`faults.py`) make the site down, dropping or slow. Run it with
`python -m erpnext_simulator --port 8000`.
"""

from erpnext_simulator.answers import Answer, FrappeError
from erpnext_simulator.doctypes import DocTypeMeta
from erpnext_simulator.faults import Fault, Faults
from erpnext_simulator.simulator import ErpnextSimulator
from erpnext_simulator.site import DEFAULT_API_KEY, DEFAULT_API_SECRET, ApiKey, FrappeSite

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "Answer",
    "ApiKey",
    "DocTypeMeta",
    "ErpnextSimulator",
    "Fault",
    "Faults",
    "FrappeError",
    "FrappeSite",
]
