"""docs/cost.md's DynamoDB and alarm figures, against the model `make bench` prices them with
(tests/benchmarks/cost.py) and the template the alarms come from."""

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from relay_local.stack import TEMPLATE, load_template

COST_DOC = (TEMPLATE.parent / "docs" / "cost.md").read_text()


def cost_model() -> ModuleType:
    path = Path(TEMPLATE.parent / "tests" / "benchmarks" / "cost.py")
    spec = importlib.util.spec_from_file_location("bench_cost", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_index_writes_make_the_relay_write_more_than_the_naive_peer() -> None:
    cost = cost_model()
    # Given an invoice with a 1 KB body, and one with a 5 KB e-invoice body
    relay, naive = cost.ledger_write_units(1), cost.ledger_write_units(1, naive=True)
    # Then the ByStatus index costs the relay 4 units (QUEUED in, moved to IN_PROGRESS, out)
    # and the peer 2 (QUEUED in, out), and the totals are the ones the page states
    assert (relay["index"], naive["index"]) == (4, 2)
    assert (sum(relay.values()), sum(naive.values())) == (10, 9)
    e_relay, e_naive = cost.ledger_write_units(5), cost.ledger_write_units(5, naive=True)
    assert (sum(e_relay.values()), sum(e_naive.values())) == (18, 17)
    assert "| **total** | **10** (18) | **9** (17) |" in COST_DOC


def test_alarms_are_priced_per_metric_they_read() -> None:
    cost = cost_model()
    template = load_template()
    alarms = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    # A metric-math alarm is billed once per series it reads, so there are more alarm metrics
    # than alarms, and the page names both numbers as the template has them
    metrics = cost.alarm_metrics(template)
    assert metrics > len(alarms)
    assert re.search(rf"the {len(alarms)} alarms read {metrics}\b", COST_DOC.replace("\n  ", " "))
    secrets = sum(1 for r in template["Resources"].values() if r["Type"] == "AWS::SecretsManager::Secret")
    assert f"{secrets} secrets (${secrets * 0.40:.2f}" in COST_DOC.replace("\n  ", " ")
