"""Issue 7 through the local pipeline (a smoke test; the rules are proved over the port fakes in
tests/unit/test_dispatcher.py): a lost answer is verified with Shipment Info, not resent."""

from factories import invoice_dict
from relay_client import RelayClient


def test_a_dropped_answer_is_verified_by_shipment_info_without_a_second_send(relay: RelayClient) -> None:
    # Given Fynd applies the first call and then drops the connection before answering
    relay.simulator.state.add_faults([{"kind": "commit_then_drop"}])
    # When the ERP's invoice goes through the relay
    assert relay.post(invoice_dict("DROPPED-1")).status == 202
    final = relay.wait_for_final(("DROPPED-1", "sale"))[("DROPPED-1", "sale")]
    # Then it is INVOICED, proved by Shipment Info, and Fynd never saw a duplicate (no IN453)
    assert (final["status"], final["confirmedBy"]) == ("INVOICED", "shipment-info")
    assert relay.simulator.state.invoice_count("DROPPED-1") == 1
    assert [call.order_ids for call in relay.simulator.state.calls()] == [("DROPPED-1",)]
    assert relay.simulator.state.stats().duplicates == 0
    assert relay.simulator.state.stats().shipment_reads >= 1
