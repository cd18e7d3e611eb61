"""`make chaos`: one chaos run through the local relay; prints its figures, exits 1 if a promise broke.

    .venv/bin/python tests/chaos/run.py [--invoices 10000] [--seed N] [--logs]

See tests/chaos/harness.py for what is sent, what fails, and how the figures are counted.
"""

import argparse
import random
import sys
import warnings

from harness import ChaosConfig, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--logs", action="store_true", help="show the functions' logs (readable)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    print(f"chaos: {args.invoices} invoices, seed {seed} (replay: --seed {seed})", flush=True)
    report = run_chaos(
        ChaosConfig(invoices=args.invoices, seed=seed),
        log_to=sys.stderr if args.logs else None,
        progress=sys.stderr,
    )
    print("\n".join(report.lines()), flush=True)
    return 0 if report.promises_kept else 1


if __name__ == "__main__":
    sys.exit(main())
