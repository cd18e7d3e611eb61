"""`make chaos`: one chaos run through the local relay; prints its figures, exits 1 if a promise broke.

    .venv/bin/python tests/chaos/run.py [--invoices 10000] [--seed N] [--senders 4] [--logs]

See tests/chaos/harness.py for what is sent, what fails, and how the figures are counted.
"""

import argparse
import random
import sys
import warnings

from harness import RECONCILE_HEAL_SECONDS, ChaosConfig, FyndFaultMix, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--logs", action="store_true", help="show the functions' logs (readable)")
    parser.add_argument(
        "--drop-share",
        type=float,
        default=None,
        help="share of Fynd answers dropped after commit (e.g. 0.04)",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=ChaosConfig.senders,
        help="ERP webhooks in flight at once; fewer keep the local queue near what dispatch drains",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    print(f"chaos: {args.invoices} invoices, seed {seed} (replay: --seed {seed})", flush=True)
    report = run_chaos(
        ChaosConfig(
            invoices=args.invoices,
            seed=seed,
            senders=args.senders,
            fynd=_fynd_mix(args.drop_share),
            # Wait long enough for the reconciler to heal a message that vanished (harness.py).
            stall_seconds=RECONCILE_HEAL_SECONDS,
        ),
        log_to=sys.stderr if args.logs else None,
        progress=sys.stderr,
    )
    print("\n".join(report.lines()), flush=True)
    return 0 if report.promises_kept else 1


def _fynd_mix(drop_share: float | None) -> FyndFaultMix:
    return FyndFaultMix() if drop_share is None else FyndFaultMix(commit_then_drop=drop_share)


if __name__ == "__main__":
    sys.exit(main())
