"""The `python -m relay_local` command line; the Makefile's run, send, status and invoke call it.

Each command imports what it needs when it runs: `send` and `status` never load moto or
boto3, so they answer in a blink, and `run` can report its start-up time honestly.
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

_STARTED = time.monotonic()


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected Name=Value, not {text!r}")
    return name, value


def _add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-t", "--template", type=Path, help="SAM template (default: the project's template.yaml)"
    )
    parser.add_argument(
        "--parameter-overrides",
        type=_parameter,
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="template parameters, as `sam deploy --parameter-overrides` takes them",
    )
    parser.add_argument(
        "--raw-logs",
        action="store_true",
        help="print the functions' Powertools JSON and EMF lines as they are",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m relay_local",
        description="The relay on one machine, without AWS and without Docker.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="the whole pipeline on 127.0.0.1 until Ctrl-C")
    _add_stack_options(run)
    run.add_argument(
        "--fresh",
        action="store_true",
        help="forget the secret and ports kept from the last run (.local/run.json) and make new ones",
    )
    send = commands.add_parser("send", help="sign a JSON file with WEBHOOK_SECRET and post it")
    send.add_argument("file", help="an invoice object or an array of 1 to 100")
    status = commands.add_parser("status", help="ask the status API about one invoice")
    status.add_argument("order_id")
    status.add_argument("--type", choices=("sale", "return"), default="sale", dest="invoice_type")
    invoke = commands.add_parser("invoke", help="run one function once per event file, as sam local invoke")
    invoke.add_argument("function", help="logical id: IngestFunction, DispatchFunction or ReconcileFunction")
    invoke.add_argument("events", nargs="+", type=Path, metavar="EVENT_FILE")
    _add_stack_options(invoke)
    events = commands.add_parser("events", help="regenerate events/ (or --check it)")
    events.add_argument(
        "--check", action="store_true", help="exit 1 if events/ differs from what is generated"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ = dict(os.environ)
    if args.command == "send":
        from relay_local import sender

        return sender.main("send", args.file, "sale", environ)
    if args.command == "status":
        from relay_local import sender

        return sender.main("status", args.order_id, args.invoice_type, environ)
    if args.command == "events":
        return _events(check=args.check)
    from relay_local.environment import SettingsError, run_settings
    from relay_local.stack import TEMPLATE

    # A status query publishes no metric but the cold start; Powertools warns about it each time.
    warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)

    template: Path = args.template or TEMPLATE
    parameters = dict(args.parameter_overrides)
    try:
        if args.command == "invoke":
            from relay_local import invoke

            config = invoke.invoke_config(environ, template, parameters)
            return invoke.main(args.function, args.events, config, raw_logs=args.raw_logs)
        from relay_local import saved_run

        state = saved_run.state_path(environ)
        if args.fresh and saved_run.forget(state):
            print(f"run: forgot the secret and ports kept in {state}; making new ones")
        settings = run_settings(environ, saved_run.load(state))
    except SettingsError as error:
        print(f"{args.command}: {error}", file=sys.stderr)
        return 2
    from relay_local.run import run

    return run(settings, template, parameters, raw_logs=args.raw_logs, started=_STARTED, state=state)


def _events(*, check: bool) -> int:
    from relay_local.events import EVENTS_DIR, stale_events, write_events

    if check:
        stale = stale_events()
        for name in stale:
            print(
                f"events/{name} differs from what `python -m relay_local events` generates", file=sys.stderr
            )
        return 1 if stale else 0
    for path in write_events():
        print(path.relative_to(EVENTS_DIR.parent))
    return 0
