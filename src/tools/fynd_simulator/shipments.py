"""Get Shipment Info as the simulator answers it: one entry per known order, built from the
same order state Update Invoice uses (orders.SHIPMENT_VIEWS), so a read always agrees with
what the last invoice did.

`GET /oms/v3/shipment/info?orderId=<id>[&locationCode=X]` with `x-access-token` answers
`{"orders": [{"id", "orderId", "orderStatus", "shipmentStatus", "orderType", "sla",
"lockStatus"}]}`, or `{"orders": []}` for an order Fynd does not know (an `UNKNOWN-` id, or
one configured for another location). Without `orderId` it answers 400.
"""

from fynd_simulator.faults import NovelStatusFault
from fynd_simulator.orders import Order


def shipment_entry(
    order_id: str, order: Order, now: float, novel: NovelStatusFault | None, novel_number: int
) -> dict[str, object] | None:
    """Count one read of the order and return its entry (None: not known to Fynd).

    A novel_status fault swaps in values this simulator has never answered before, numbered
    by `novel_number`, which the caller never repeats.
    """
    view = order.shipment_view(now)
    if view is None:
        return None
    order_status, shipment_status = view
    if novel is not None and novel.field in ("both", "orderStatus"):
        order_status = f"SIM_NOVEL_{novel_number}"
    if novel is not None and novel.field in ("both", "shipmentStatus"):
        shipment_status = f"bag_sim_novel_{novel_number}"
    return {
        "id": order_id,
        "orderId": order_id,
        "orderStatus": order_status,
        "shipmentStatus": shipment_status,
        "orderType": order.kind,
        "sla": {"dispatchBy": None},
        "lockStatus": False,
    }
