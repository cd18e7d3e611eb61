"""`make scale`: the scenarios of issue 19 in the test world (tests/scale/harness.py).

    python tests/scale/run.py [--scenario erpnext|batching|all] [--invoices N] [--seed S]
                              [--fynd-rate R] [--param Name=Value ...] [--json FILE]

Prints the figures of each scenario; `--json` writes them too. Nothing sleeps: a simulated
hour takes seconds to minutes of CPU (docs/scale.md gives the run times).
"""

import argparse
import gc
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in ("src/functions", "src/tools", "tests"):
    sys.path.insert(0, str(ROOT / path))

import conftest  # noqa: E402,F401  (the functions' environment, as the test process has it)
from scale.harness import SCENARIOS, Simulation  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fynd-rate", type=float, default=20.0, help="Fynd's calls/s per credential")
    parser.add_argument(
        "--fynd-read-rate",
        type=float,
        default=20.0,
        help="Fynd's Shipment Info reads/s per credential; 0: counted with the calls against --fynd-rate",
    )
    parser.add_argument(
        "--lost-share", type=float, help="the share of Fynd's answers lost (0.05); a what-if, 0 for none"
    )
    parser.add_argument("--param", action="append", default=[], help="a template parameter, Name=Value")
    parser.add_argument("--warm-table", action="store_true", help="a pre-warmed (or old) table")
    parser.add_argument("--max-hours", type=float, default=48.0, help="stop the clock here")
    parser.add_argument(
        "--in-flight-quota", type=int, help="SQS's in-flight quota (~120,000), scaled for a smaller run"
    )
    parser.add_argument(
        "--delete-at", type=float, metavar="MINUTES", help="delete one waiting message then: is it healed?"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.param)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    # The world holds millions of long-lived objects (ledger entries, messages, bodies): at
    # CPython's default thresholds the cyclic collector walks them all again and again (a third
    # of the run at 40,000 invoices, growing with the run). Fewer, larger young collections keep
    # the few cycles a run makes (an exception's traceback) collected; nothing depends on when.
    gc.set_threshold(200_000, 20, 10)
    results = []
    for name in names:
        scenario = SCENARIOS[name](args.invoices, args.seed)
        scenario.fynd_rate = args.fynd_rate
        scenario.fynd_read_rate = args.fynd_read_rate or None
        if args.lost_share is not None:
            scenario.lost_share = args.lost_share
        scenario.parameters = overrides
        scenario.warm_table = args.warm_table
        scenario.max_hours = args.max_hours
        scenario.delete_at_minutes = args.delete_at
        if args.in_flight_quota:
            scenario.in_flight_quota = args.in_flight_quota
        report = Simulation(scenario).run()
        print("\n".join(report.lines), flush=True)
        results.append(report.figures)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(result["accounting_ok"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
