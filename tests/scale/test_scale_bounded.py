"""The bounded `make scale` run in `make test`: 20,000 invoices from a batching ERP at 2,000/s
through the real ingest, dispatcher and reconciler in the test world (tests/scale/harness.py).

It asserts the model's own sanity, never a speed or a product figure: every invoice sent is
accounted for exactly once (lost at the edge, final, dead-lettered or unfinished), the run
drains, and every second send Fynd saw has a cause the world can name.
"""

from scale.harness import SCENARIOS, Simulation
from world.fynd import ANSWER_LOST, ANSWERED, KILLED

INVOICES = 20_000


def test_a_bounded_sale_day_accounts_for_every_invoice() -> None:
    # Given the batching scenario at the template's defaults, scaled to 20,000 invoices
    scenario = SCENARIOS["batching"](INVOICES, 7)

    # When the world runs until the queue is empty
    report = Simulation(scenario).run()
    figures = report.figures

    # Then every invoice is accounted for once, every one answered 202 is in the ledger, none is
    # left unfinished (nor without a message on its way), and every second send has a named cause
    assert figures["invoices"] == INVOICES
    parts = ("lost_at_edge", "final", "dead_lettered", "unfinished")
    assert sum(figures[name] for name in parts) == INVOICES, figures
    assert figures["accounting_ok"]
    assert figures["unfinished"] == 0, figures
    assert figures["acknowledged_but_missing"] == 0, figures
    assert figures["stranded"] == 0, figures
    assert figures["final"] == figures["invoiced"] + figures["rejected"]
    assert set(figures["sent_twice_by_reason"]) <= {ANSWER_LOST, KILLED, ANSWERED}
    assert sum(figures["sent_twice_by_reason"].values()) == figures["sent_twice"]
    assert figures["fynd_calls"] > 0
