"""`python -m erpnext_simulator`: serve a simulated ERPNext site until SIGINT or SIGTERM.

The first line on stdout is the base URL and nothing else, so a launcher can read it.
"""

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from erpnext_simulator.doctypes import DocTypeMeta
from erpnext_simulator.simulator import ErpnextSimulator
from erpnext_simulator.site import DEFAULT_API_KEY, DEFAULT_API_SECRET, ApiKey, FrappeSite


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m erpnext_simulator",
        description="Serve a simulated ERPNext (Frappe) site until SIGINT or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port, 0 for any free (8000)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--api-secret", default=DEFAULT_API_SECRET)
    parser.add_argument(
        "--doctype-json",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an exported DocType JSON whose rules to enforce (repeatable)",
    )
    parser.add_argument("--no-link-validation", action="store_true", help="accept Links to missing documents")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        doctypes = [DocTypeMeta.from_doctype_json(json.loads(path.read_text())) for path in args.doctype_json]
    except (OSError, ValueError, KeyError) as error:
        print(f"erpnext-simulator: cannot read a --doctype-json file: {error}", file=sys.stderr)
        return 2
    site = FrappeSite(
        api_keys=[ApiKey(args.api_key, args.api_secret)], validate_links=not args.no_link_validation
    )
    simulator = ErpnextSimulator(args.host, args.port, quiet=args.quiet, site=site, doctypes=doctypes)
    simulator.api_key, simulator.api_secret = args.api_key, args.api_secret
    try:
        simulator.start()
    except OSError as error:
        print(f"erpnext-simulator: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(simulator.url, flush=True)
    print(f"erpnext-simulator: API key {args.api_key}; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
