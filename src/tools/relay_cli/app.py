"""`relay`: operate the Fynd Invoice Relay from a terminal, against `make run` or a deployed stack.

Every command prints a table for people, or one JSON document with `--json`, and exits
with a code scripts can rely on (relay_cli.output). Which relay: `--stack NAME` (found by
its CloudFormation outputs), else the local one at `--api-url` with its AWS endpoint at
`--endpoint-url` (the `make run` banner prints both).
"""

import csv
import functools
import getpass
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from relay.domain.errors import LedgerUnavailableError
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus
from relay_cli import ledger_index, output
from relay_cli.backfill import backfill
from relay_cli.output import EXIT_CODES_HELP, Exit, emit_json, iso, pairs, table
from relay_cli.redrive import depth, in_flight, redrive
from relay_cli.smoke import new_order_id, run_smoke
from relay_cli.target import Target, TargetError, TargetNotGiven, TargetOptions, resolve
from relay_cli.webhook import RelayApi

app = typer.Typer(
    help=__doc__.split("\n\n")[0] if __doc__ else None,
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Json = Annotated[bool, typer.Option("--json", help="One JSON document on stdout instead of a table.")]
Type = Annotated[InvoiceType, typer.Option("--type", help="sale (invoice) or return (credit note).")]
Since = Annotated[
    str | None,
    typer.Option(
        help="Only entries due since (rejected, queued, retrying, lease ending): 30m, 24h, 7d, a date or a date-time."
    ),
]


def _handled[**P](command: Callable[P, None]) -> Callable[P, None]:
    """Turns what goes wrong outside the command line into a message and an exit code, once."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except ledger_index.NotIndexed as error:
            _fail(Exit.USAGE, str(error))
        except ValueError as error:  # a malformed --since/--from/--to
            _fail(Exit.USAGE, str(error))
        except TargetNotGiven as error:
            _fail(Exit.USAGE, str(error))
        except TargetError as error:
            _fail(Exit.UNREACHABLE, str(error))
        except NoCredentialsError:
            _fail(
                Exit.UNREACHABLE,
                "no AWS credentials: configure a profile, or pass --endpoint-url for `make run`",
            )
        except (BotoCoreError, ClientError, LedgerUnavailableError) as error:
            _fail(Exit.UNREACHABLE, f"AWS refused or did not answer: {_aws_reason(error)}")

    return wrapper


@app.callback()
def _options(
    ctx: typer.Context,
    stack: Annotated[
        str | None, typer.Option(envvar="RELAY_STACK", help="Deployed stack name (found by its outputs).")
    ] = None,
    region: Annotated[str | None, typer.Option(envvar="AWS_REGION", help="AWS region of the stack.")] = None,
    api_url: Annotated[
        str | None,
        typer.Option(envvar="RELAY_API_URL", help="Local API URL (default http://127.0.0.1:3000)."),
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            envvar="RELAY_AWS_ENDPOINT", help="AWS endpoint of `make run` (its banner's `AWS endpoint`)."
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="WEBHOOK_SECRET",
            show_default=False,
            help="whsec_... signing secret (a stack's is read from it).",
        ),
    ] = None,
) -> None:
    ctx.obj = TargetOptions(
        stack=stack, region=region, api_url=api_url, endpoint_url=endpoint_url, secret=secret
    )


@app.command()
@_handled
def send(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A JSON file: one invoice or an array of up to 100.")],
    as_json: Json = False,
) -> None:
    """Sign FILE as it is on disk and POST it to /v1/invoices."""
    try:
        body = file.read_text()
    except OSError as error:
        _fail(Exit.USAGE, f"cannot read {file}: {error.strerror}")
    target = resolve(ctx.obj)
    answer = RelayApi(target.api_url, target.signing_secret()).post(body)
    accepted = answer.status == 202
    if as_json:
        emit_json({"httpStatus": answer.status, "body": answer.body})
    elif accepted:
        rows = [
            (i["orderId"], i["invoiceType"], i["invoiceNumber"], i["status"]) for i in answer.body["invoices"]
        ]
        output.console().print(table("202 Accepted", ("order", "type", "invoice", "status"), rows))
    else:
        _print_problem(answer.status, answer.body)
    raise typer.Exit(Exit.OK if accepted else Exit.ATTENTION)


@app.command()
@_handled
def status(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument(help="The order's id.")],
    invoice_type: Type = InvoiceType.SALE,
    as_json: Json = False,
) -> None:
    """One invoice's ledger entry from the status API, with its replay history."""
    target = resolve(ctx.obj)
    answer = RelayApi(target.api_url, target.signing_secret()).status(order_id, invoice_type.value)
    if as_json:
        emit_json(answer.body)
    elif answer.status == 200:
        document = dict(answer.body)
        history = document.pop("history", [])
        rows = [
            (name, json.dumps(value) if isinstance(value, dict) else value)
            for name, value in document.items()
        ]
        out = output.console()
        out.print(pairs(f"{order_id} ({invoice_type.value})", rows))
        if history:
            events = [
                (e["at"], e["action"], e["by"], e["reason"], (e.get("previousError") or {}).get("code"))
                for e in history
            ]
            out.print(table("history", ("at", "action", "by", "why", "previous code"), events))
    else:
        _print_problem(answer.status, answer.body)
    raise typer.Exit(Exit.OK if answer.status == 200 else Exit.ATTENTION)


@app.command("list")
@_handled
def list_entries(
    ctx: typer.Context,
    status: Annotated[
        InvoiceStatus, typer.Option(help="Entries in this state (INVOICED is not indexed).")
    ] = (InvoiceStatus.REJECTED),
    since: Since = None,
    code: Annotated[
        str | None, typer.Option(help="Only this last error code, e.g. IN401, IN403_DEADLINE.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    dead_lettered: Annotated[
        bool,
        typer.Option(
            "--dead-lettered",
            help="Instead of --status: invoices whose message went to the dead-letter queue.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Invoices in one state, latest first, from the ledger's work index (never a scan)."""
    target = _aws_target(ctx)
    since_at = output.parse_when(since, now=datetime.now(UTC)) if since else None
    if dead_lettered:
        entries = ledger_index.dead_lettered(target.ledger(), since=since_at, limit=limit)
    else:
        entries = ledger_index.by_status(target.ledger(), status, since=since_at, code=code, limit=limit)
    rows = [ledger_index.as_row(entry) for entry in entries]
    if as_json:
        emit_json(rows)
        return
    shown = [
        (
            iso(r["updatedAt"]),
            r["orderId"],
            r["invoiceType"],
            r["invoiceNumber"],
            r["code"],
            r["message"],
            r["attempts"],
            r["replays"],
        )
        for r in rows
    ]
    columns = ("updated", "order", "type", "invoice", "code", "message", "attempts", "replays")
    title = "dead-lettered" if dead_lettered else str(status)
    output.console().print(table(f"{title} ({len(rows)})", columns, shown))


@app.command("redrive")
@_handled
def redrive_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the dead-letter queue; move nothing.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Move at most this many.")] = None,
    as_json: Json = False,
) -> None:
    """Move dead-lettered invoices back to the invoice queue, with a progress bar and a count."""
    target = _aws_target(ctx)
    sqs = target.sqs()
    if dry_run:
        waiting = depth(sqs, target.dead_letter_queue_url)
        summary = {"dryRun": True, "waiting": waiting, "moved": 0, "failed": 0, "failures": []}
        _print_summary(summary, as_json, f"{waiting} message(s) on the dead-letter queue; nothing moved")
        return
    with _progress(depth(sqs, target.dead_letter_queue_url) if limit is None else limit) as on_progress:
        result = redrive(
            sqs,
            dead_letter_queue_url=target.dead_letter_queue_url,
            queue_url=target.queue_url,
            limit=limit,
            on_progress=on_progress,
        )
    summary = {
        "dryRun": False,
        "waiting": result.waiting,
        "moved": result.moved,
        "failed": result.failed,
        "failures": result.failures,
    }
    _print_summary(
        summary, as_json, f"moved {result.moved} message(s) to the invoice queue, {result.failed} failed"
    )
    raise typer.Exit(Exit.OK if not result.failures else Exit.ATTENTION)


@app.command()
@_handled
def replay(
    ctx: typer.Context,
    order_ids: Annotated[
        list[str] | None, typer.Argument(help="Orders to replay.", show_default=False)
    ] = None,
    invoice_type: Type = InvoiceType.SALE,
    status: Annotated[
        InvoiceStatus | None, typer.Option(help="Replay every entry in this state (only REJECTED).")
    ] = None,
    code: Annotated[
        str | None, typer.Option(help="With --status: only this code, e.g. IN403_DEADLINE.")
    ] = None,
    since: Since = None,
    reason: Annotated[
        str, typer.Option(help="Why (recorded in the ledger and shown by the status API).")
    ] = "",
    by: Annotated[
        str | None, typer.Option(help="Who (default: your AWS identity, or your user name locally).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check each invoice; queue nothing.")] = False,
    as_json: Json = False,
) -> None:
    """Queue REJECTED invoices again, unchanged, once the cause is fixed; records who, when and why."""
    if bool(order_ids) == (status is not None):
        _fail(Exit.USAGE, "name ORDER_IDs, or --status REJECTED [--code ...], not both")
    if status is not None and status is not InvoiceStatus.REJECTED:
        _fail(Exit.USAGE, "only REJECTED invoices are replayed")
    if not reason.strip() and not dry_run:
        _fail(Exit.USAGE, "--reason is required: the ledger records why")
    # The relay's queue adapter brings Powertools (a second of imports): only this command needs it.
    from relay.adapters.queue import SqsInvoiceQueue
    from relay_cli.replay import Replayer

    target = _aws_target(ctx)
    ledger = target.ledger()
    if order_ids:
        keys = [InvoiceKey(order_id, invoice_type) for order_id in order_ids]
    else:
        since_at = output.parse_when(since, now=datetime.now(UTC)) if since else None
        entries = ledger_index.by_status(ledger, InvoiceStatus.REJECTED, since=since_at, code=code)
        keys = [entry.key for entry in entries]
    replayer = Replayer(ledger, SqsInvoiceQueue(target.queue_url, target.sqs()))
    outcomes = replayer.replay_all(
        keys, by=by or _who(target), reason=reason.strip(), now=time.time(), dry_run=dry_run
    )
    if as_json:
        emit_json([outcome.as_dict() for outcome in outcomes])
    else:
        rows_shown = [
            (o.key.order_id, o.key.invoice_type, o.previous_code, o.result.value, o.detail) for o in outcomes
        ]
        title = f"replay{' (dry run)' if dry_run else ''}: {sum(o.ok for o in outcomes)} of {len(outcomes)}"
        output.console().print(table(title, ("order", "type", "was", "result", "detail"), rows_shown))
    raise typer.Exit(Exit.OK if all(outcome.ok for outcome in outcomes) else Exit.ATTENTION)


@app.command()
@_handled
def stats(
    ctx: typer.Context,
    since: Since = None,
    invoiced: Annotated[
        bool,
        typer.Option(
            "--invoiced/--no-invoiced",
            help="Count INVOICED entries too: a Scan of the whole table (counts only); skip it on a large one.",
        ),
    ] = True,
    as_json: Json = False,
) -> None:
    """Counts by state and code (INVOICED by a counting scan), and what is on the queues and in flight."""
    target = _aws_target(ctx)
    ledger, sqs = target.ledger(), target.sqs()
    since_at = output.parse_when(since, now=datetime.now(UTC)) if since else None
    counts: Counter[tuple[str, str]] = Counter()
    parked = 0
    for status in ledger_index.INDEXED:
        for entry in ledger_index.by_status(ledger, status, since=since_at):
            counts[(status.value, entry.last_error.code if entry.last_error else "")] += 1
            parked += entry.parked
    invoiced_count = (
        ledger_index.count_invoiced(target.dynamodb(), target.table_name, since=since_at)
        if invoiced
        else None
    )
    by_status = {
        status.value: sum(n for (s, _), n in counts.items() if s == status) for status in ledger_index.INDEXED
    }
    if invoiced_count is not None:
        by_status[InvoiceStatus.INVOICED.value] = invoiced_count
    document = {
        "byStatus": by_status,
        "byStatusAndCode": [
            {"status": s, "code": c or None, "count": n} for (s, c), n in sorted(counts.items())
        ],
        "parked": parked,
        "invoiced": invoiced_count,
        "queue": depth(sqs, target.queue_url),
        "inFlight": in_flight(sqs, target.queue_url),
        "deadLetterQueue": depth(sqs, target.dead_letter_queue_url),
        "note": (
            "INVOICED counted by a Scan of the table (counts only; --no-invoiced skips it)"
            if invoiced
            else "INVOICED not counted (--no-invoiced): the work index is sparse (see `relay list --help`)"
        ),
    }
    if as_json:
        emit_json(document)
        return
    out = output.console()
    rows: list[tuple[str, str, int]] = [(s, c, n) for (s, c), n in sorted(counts.items())]
    if invoiced_count is not None:
        rows.append((InvoiceStatus.INVOICED.value, "", invoiced_count))
    out.print(table("by state and code", ("status", "code", "count"), rows))
    out.print(
        table(
            "queues",
            ("queue", "waiting", "in flight"),
            [
                ("invoice queue", document["queue"], document["inFlight"]),
                ("dead-letter queue", document["deadLetterQueue"], ""),
            ],
        )
    )
    output.errors().print(document["note"], soft_wrap=True)


@app.command("backfill-work-index")
@_handled
def backfill_work_index(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the entries the index lacks; write nothing.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Step 2 of moving a deployed stack to the work index: index the entries written before it
    (docs/runbook.md#moving-to-the-work-index). Safe to repeat; done when it writes 0."""
    target = _aws_target(ctx)
    result = backfill(target.dynamodb(), target.table_name, shards=target.work_index_shards, dry_run=dry_run)
    line = (
        f"{result.written} entr{'y' if result.written == 1 else 'ies'} {'to index' if dry_run else 'indexed'}"
        f", {result.already} already indexed, {result.moved} indexed by a dispatcher meanwhile"
    )
    _print_summary({"dryRun": dry_run, **result.as_dict()}, as_json, line)


REPORT_COLUMNS = (
    "orderId",
    "invoiceType",
    "invoiceNumber",
    "status",
    "code",
    "reason",
    "attempts",
    "replays",
    "acceptedAt",
    "updatedAt",
)


def _report_record(row: dict[str, Any]) -> dict[str, Any]:
    """A `relay list --json` row as the finance CSV shows it: blanks for none, ISO 8601 times."""
    shown = {
        **row,
        "code": row["code"] or "",
        "reason": row["message"] or "",
        "acceptedAt": iso(row["acceptedAt"]),
        "updatedAt": iso(row["updatedAt"]),
    }
    return {name: shown[name] for name in REPORT_COLUMNS}


@app.command()
@_handled
def report(
    ctx: typer.Context,
    from_: Annotated[str, typer.Option("--from", help="Start: a date (UTC) or date-time.")],
    to: Annotated[str, typer.Option(help="End, inclusive: a date (its whole day) or date-time.")],
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the CSV here, not to stdout.")
    ] = None,
    as_json: Json = False,
) -> None:
    """A CSV for finance: rejected (with the reason) and pending invoices due in [--from, --to]."""
    now = datetime.now(UTC)
    start, end = output.parse_when(from_, now=now), output.parse_when(to, now=now, end_of_day=True)
    if end < start:
        _fail(Exit.USAGE, "--to is before --from")
    target = _aws_target(ctx)
    ledger = target.ledger()
    rows = [
        ledger_index.as_row(entry)
        for status in ledger_index.INDEXED
        for entry in ledger_index.by_status(ledger, status, since=start, until=end)
    ]
    records = [_report_record(r) for r in sorted(rows, key=lambda r: (r["updatedAt"], r["orderId"]))]
    limit = "INVOICED invoices are not in this report: the ledger index holds only what is not invoiced"
    if as_json:
        emit_json({"from": iso(start), "to": iso(end), "rows": records, "limits": [limit]})
        return
    with out.open("w", newline="") if out else _stdout() as stream:
        writer = csv.DictWriter(stream, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    output.errors().print(f"{len(records)} row(s) from {iso(start)} to {iso(end)}. {limit}.")


@app.command()
@_handled
def smoke(
    ctx: typer.Context,
    location: Annotated[str | None, typer.Option(help="locationCode whose Fynd credentials to use.")] = None,
    order_id: Annotated[
        str | None, typer.Option("--order", help="Order id to invoice (default: a new SMOKE-... id).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for a final state.")] = 120.0,
    as_json: Json = False,
) -> None:
    """One signed test invoice through the stack end to end, then its status."""
    target = resolve(ctx.obj)
    api = RelayApi(target.api_url, target.signing_secret())
    order = order_id or new_order_id()
    errors = output.errors()
    try:
        result = run_smoke(
            api,
            location=location,
            order_id=order,
            timeout=timeout,
            progress=lambda line: errors.print(
                f"smoke: {line}", highlight=False, markup=False, soft_wrap=True
            ),
        )
    except KeyboardInterrupt:
        _fail(
            Exit.ATTENTION,
            f"smoke stopped while waiting: the test invoice is order {order};"
            f" ask for it later with `relay status {order}`",
        )
    if as_json:
        emit_json(result.as_dict())
    else:
        rows = [("target", target.description), *result.as_dict().items()]
        output.console().print(pairs(f"smoke: {'passed' if result.passed else 'FAILED'}", rows))
    raise typer.Exit(Exit.OK if result.passed else Exit.ATTENTION)


@app.command()
@_handled
def recover(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option(help="Read rows created since: an ISO date or date-time, in the site's time.")
    ],
    erpnext_url: Annotated[
        str, typer.Option(envvar="ERPNEXT_URL", help="The ERPNext site, e.g. https://erp.example.com.")
    ],
    api_key: Annotated[
        str, typer.Option(envvar="ERPNEXT_API_KEY", help="API key of the relay's ERPNext user.")
    ],
    api_secret: Annotated[
        str, typer.Option(envvar="ERPNEXT_API_SECRET", show_default=False, help="Its API secret.")
    ],
    relay_url: Annotated[
        str | None,
        typer.Option(
            help="The Request URL the Webhooks post to (default: the relay's API URL + /v1/invoices)."
        ),
    ] = None,
    site_timezone: Annotated[
        str | None,
        typer.Option(envvar="ERPNEXT_TIME_ZONE", help="The site's time zone, for a --since with an offset."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Take in the invoices ERPNext gave up sending: its failed Webhook Request Log rows for the
    relay's URL, each body through the same intake as a webhook (never sent twice)."""
    # The relay's queue adapter brings Powertools (a second of imports): only this command needs it.
    from relay.domain.errors import RequestLogUnavailableError
    from relay_cli.recover import recover as run_recovery
    from relay_cli.recover import site_time

    since_text = site_time(since, site_timezone)
    target = _aws_target(ctx)
    try:
        url, report = run_recovery(
            target,
            erpnext_url=erpnext_url,
            api_key=api_key,
            api_secret=api_secret,
            since=since_text,
            relay_url=relay_url,
        )
    except RequestLogUnavailableError as error:
        _fail(Exit.UNREACHABLE, str(error))
    summary = {"url": url, "since": since_text, **report.summary()}
    if as_json:
        emit_json(
            {
                **summary,
                "rows": [
                    {
                        "name": row.name,
                        "creation": row.creation,
                        "outcome": row.outcome.value,
                        "detail": row.detail,
                        "referenceDocument": row.reference_document,
                    }
                    for row in report.rows
                ],
            }
        )
    else:
        rows_shown = [
            (row.creation, row.name, row.reference_document or "", row.outcome.value, row.detail)
            for row in report.rows
        ]
        output.console().print(
            table(
                f"recover since {since_text}: found {report.found}, taken in {report.taken_in},"
                f" already known {report.already_known}, refused {report.refused}, empty {report.empty}",
                ("created", "row", "document", "outcome", "detail"),
                rows_shown,
            )
        )
    # A refused row needs the invoice fixed; an empty one was never sent (a template that failed).
    raise typer.Exit(Exit.OK if report.refused == 0 and report.empty == 0 else Exit.ATTENTION)


def _aws_target(ctx: typer.Context) -> Target:
    target = resolve(ctx.obj)
    if not target.queue_url:
        raise TargetNotGiven(
            "this command reads the ledger and the queues: pass --stack NAME, or for `make run`"
            " --endpoint-url (RELAY_AWS_ENDPOINT) with the `AWS endpoint` its banner prints"
        )
    return target


def _who(target: Target) -> str:
    if target.endpoint_url is None:
        try:
            import boto3

            return boto3.Session(region_name=target.region).client("sts").get_caller_identity()["Arn"]
        except (BotoCoreError, ClientError):
            pass
    return getpass.getuser()


def _progress(total: int) -> Any:
    """A Rich progress bar on a terminal; elsewhere (CI, logs, tests) a line per tenth moved."""
    errors = output.errors()
    if errors.is_terminal:
        return _RichProgress(total)
    return _LineProgress(total, errors)


class _RichProgress:
    def __init__(self, total: int) -> None:
        self._bar = Progress(
            TextColumn("redrive"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=output.errors(),
        )
        self._task = self._bar.add_task("redrive", total=total or None)

    def __enter__(self) -> Callable[[int], None]:
        self._bar.start()
        return lambda moved: self._bar.update(self._task, completed=moved)

    def __exit__(self, *_: object) -> None:
        self._bar.stop()


class _LineProgress:
    def __init__(self, total: int, stream: Any) -> None:
        self._total, self._stream, self._shown = total, stream, 0
        self._step = max(1, total // 10)

    def __enter__(self) -> Callable[[int], None]:
        return self._show

    def _show(self, moved: int) -> None:
        if moved - self._shown >= self._step or (self._total and moved >= self._total > self._shown):
            self._shown = moved
            self._stream.print(f"redrive: {moved}/{self._total} moved", highlight=False)

    def __exit__(self, *_: object) -> None:
        return None


def _print_summary(summary: dict[str, Any], as_json: bool, line: str) -> None:
    if as_json:
        emit_json(summary)
    else:
        out = output.console()
        out.print(line, highlight=False)
        out.print(pairs("", summary.items()))


def _print_problem(status: int, body: Any) -> None:
    out = output.console()
    if isinstance(body, dict):
        rows = [("status", status), ("title", body.get("title")), ("detail", body.get("detail"))]
        for item in body.get("errors", []) or []:
            rows.append((f"invoice {item.get('index')}: {item.get('field')}", item.get("message")))
        for item in body.get("conflicts", []) or []:
            rows.append((f"conflict {item.get('orderId')}", item.get("status")))
        out.print(pairs(f"{status} refused", rows))
    else:
        out.print(f"{status}: {body}")


def _fail(code: Exit, message: str) -> Any:
    output.errors().print(f"relay: {message}", highlight=False, markup=False)
    raise typer.Exit(code)


def _aws_reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code"))
    return type(error).__name__ if isinstance(error, BotoCoreError) else str(error)


class _stdout:
    """sys.stdout as a context manager that is not closed at the end."""

    def __enter__(self) -> Any:
        return sys.stdout

    def __exit__(self, *_: object) -> None:
        sys.stdout.flush()


GLOBAL_OPTIONS = frozenset({"--stack", "--region", "--api-url", "--endpoint-url", "--secret"})
"""The options of `relay` itself (each takes a value); accepted before or after the command."""


def hoist_global_options(argv: list[str]) -> list[str]:
    """`relay status X --stack S` as `relay --stack S status X`: Click takes a group's options
    only before the command, but people add `--stack` wherever they remember it. Every global
    option after the command (as `--name value` or `--name=value`, up to a `--`) moves before it."""
    command_at = _command_index(argv)
    if command_at is None:
        return argv
    moved: list[str] = []
    rest: list[str] = []
    index = command_at + 1
    while index < len(argv):
        item = argv[index]
        if item == "--":
            rest.extend(argv[index:])
            break
        name = item.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and "=" in item:
            moved.append(item)
        elif item in GLOBAL_OPTIONS and index + 1 < len(argv):
            moved.extend(argv[index : index + 2])
            index += 1
        else:
            rest.append(item)
        index += 1
    return [*argv[:command_at], *moved, argv[command_at], *rest]


def _command_index(argv: list[str]) -> int | None:
    index = 0
    while index < len(argv):
        item = argv[index]
        if item in GLOBAL_OPTIONS:
            index += 2
        elif item.startswith("-"):
            index += 1
        else:
            return index
    return None


def main(argv: list[str] | None = None) -> None:
    app(args=hoist_global_options(list(sys.argv[1:] if argv is None else argv)), prog_name="relay")
