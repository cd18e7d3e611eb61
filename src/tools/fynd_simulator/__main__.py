"""`python -m fynd_simulator`: serve until SIGINT or SIGTERM, then exit 0.

The first line on stdout is the base URL and nothing else, so a launcher can read it.
"""

import argparse
import signal
import sys
import threading

from fynd_simulator.invoices import ENVELOPES
from fynd_simulator.simulator import FyndSimulator
from fynd_simulator.tokens import (
    DEFAULT_PASSWORD,
    DEFAULT_TOKEN_TTL,
    DEFAULT_USERNAME,
    Credential,
)


def _location_credential(text: str) -> Credential:
    code, _, user_password = text.partition("=")
    username, _, password = user_password.partition(":")
    if not (code and username and password):
        raise argparse.ArgumentTypeError("expected LOCATION=USERNAME:PASSWORD")
    return Credential(username, password, code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fynd_simulator",
        description="Serve a local Fynd Konnect simulator until SIGINT or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="port, 0 for any free (8900)")
    parser.add_argument("--username", default=DEFAULT_USERNAME)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--token-ttl", type=int, default=DEFAULT_TOKEN_TTL, help="seconds")
    parser.add_argument("--envelope", choices=ENVELOPES, default="camel")
    parser.add_argument(
        "--location-credential",
        type=_location_credential,
        action="append",
        default=[],
        metavar="LOCATION=USERNAME:PASSWORD",
        help="location-level credentials (repeatable)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=None, help="answer 413 to a larger Update Invoice body"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    simulator = FyndSimulator(
        args.host,
        args.port,
        username=args.username,
        password=args.password,
        token_ttl=args.token_ttl,
        location_credentials=args.location_credential,
        envelope=args.envelope,
        quiet=args.quiet,
        max_body_bytes=args.max_body_bytes,
    )
    try:
        simulator.start()
    except OSError as error:
        print(f"fynd-simulator: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(simulator.url, flush=True)
    print(f"fynd-simulator: username {args.username}; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
