"""Recovery: the invoices ERPNext gave up sending, found in its `Webhook Request Log`, taken in.

Frappe writes a `Webhook Request Log` row for every attempt, holding the body it sent
(`data`) and, when the attempt did not end in a 2xx, a traceback in `error` (Frappe v14/v15:
`frappe/integrations/doctype/webhook/webhook.py`, `log_request`). v14/v15 try three times in
five seconds and stop; later versions stop after about 27 hours. Whatever the relay did not
take in by then (an outage, a throttle, a deploy) exists only in those rows.

`Recovery.recover` reads the failed rows for the relay's own URL since a time and puts each
row's body through the same intake as a webhook: `parse_invoices` (400/422 rules) and
`InvoiceAcceptance.accept` (the ledger's idempotency). So a body the relay already holds is a
duplicate, answered with its state and never sent again; one it never saw is recorded and
queued; one it would refuse is reported with the reason. Frappe writes up to three rows per
delivery with the same body: the first is taken in, the others are already known. Running
recovery twice, or over overlapping windows, takes nothing in twice.

Each row is accepted under the webhook id `erpnext-request-log:<row name>`, which the ledger
keeps as the entry's correlation id: the status API shows which row an invoice came from.

The row's body was signed by nobody: it is trusted because it was read from the ERP with the
relay's own API key, over the ERP's API, not received from the internet.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from relay.domain.errors import ConflictError, InvalidInvoices, MalformedBody
from relay.domain.intake import Action, Admission
from relay.domain.invoice import Invoice
from relay.domain.webhook import parse_invoices
from relay.observability import count, logger

WEBHOOK_ID_PREFIX = "erpnext-request-log:"


@dataclass(frozen=True)
class LoggedRequest:
    """One `Webhook Request Log` row: an attempt that did not end in a 2xx."""

    name: str
    creation: str
    data: str | None
    """The JSON body Frappe sent (`frappe.as_json`: indented, keys sorted); None when the
    template failed to render and nothing was sent."""
    reference_document: str | None = None
    webhook: str | None = None


class RequestLog(Protocol):
    def failed_requests(self, *, url: str, since: str) -> Iterable[LoggedRequest]:
        """Rows for requests to `url` created at or after `since` (the site's time, Frappe's
        `YYYY-MM-DD HH:MM:SS`), whose attempt did not end in a 2xx, oldest first."""
        ...


class Intake(Protocol):
    def accept(self, invoices: Sequence[Invoice], *, correlation_id: str | None) -> list[Admission]: ...


class RowOutcome(StrEnum):
    TAKEN_IN = "taken_in"
    """At least one invoice of the body was new to the relay (or replaced, or resubmitted): queued."""
    ALREADY_KNOWN = "already_known"
    """Every invoice of the body was already in the ledger: answered with its state, not sent again."""
    REFUSED = "refused"
    """The intake refuses the body as it would the webhook (400, 409 or 422): nothing changed."""
    EMPTY = "empty"
    """The row holds no body: Frappe failed before sending (a template error)."""


@dataclass(frozen=True)
class RowResult:
    name: str
    creation: str
    outcome: RowOutcome
    detail: str = ""
    reference_document: str | None = None


@dataclass
class RecoveryReport:
    rows: list[RowResult] = field(default_factory=list)
    complete: bool = True
    """False when the run stopped before the last row for want of time: the rows it did not
    reach are read again by the next run."""

    def _count(self, outcome: RowOutcome) -> int:
        return sum(row.outcome is outcome for row in self.rows)

    @property
    def found(self) -> int:
        return len(self.rows)

    @property
    def taken_in(self) -> int:
        return self._count(RowOutcome.TAKEN_IN)

    @property
    def already_known(self) -> int:
        return self._count(RowOutcome.ALREADY_KNOWN)

    @property
    def refused(self) -> int:
        return self._count(RowOutcome.REFUSED)

    @property
    def empty(self) -> int:
        return self._count(RowOutcome.EMPTY)

    def summary(self) -> dict[str, int]:
        return {
            "found": self.found,
            "takenIn": self.taken_in,
            "alreadyKnown": self.already_known,
            "refused": self.refused,
            "empty": self.empty,
        }


_NEW = frozenset({Action.CREATE, Action.RESUBMIT, Action.REPLACE})


class Recovery:
    def __init__(self, *, log: RequestLog, intake: Intake) -> None:
        self._log = log
        self._intake = intake

    def recover(
        self,
        *,
        url: str,
        since: str,
        on_row: Callable[[RowResult], None] | None = None,
        seconds_left: Callable[[], float] | None = None,
        reserve_seconds: float = 0.0,
    ) -> RecoveryReport:
        """Take in every failed row's body. Infrastructure errors (the ERP, the ledger or the
        queue unavailable) leave as they are: what was taken in stays taken in, and the next
        run takes in the rest (nothing twice). With `seconds_left`, no row is started once
        fewer than `reserve_seconds` remain (a scheduled run's timeout): the report is then
        not `complete`."""
        report = RecoveryReport()
        for row in self._log.failed_requests(url=url, since=since):
            if seconds_left is not None and seconds_left() < reserve_seconds:
                report.complete = False
                break
            result = self._take_in(row)
            report.rows.append(result)
            if on_row is not None:
                on_row(result)
        count("RecoveryRowsFound", report.found)
        count("RecoveryRowsTakenIn", report.taken_in)
        logger.info(
            "recovery from the Webhook Request Log",
            extra={"url": url, "since": since, "complete": report.complete, **report.summary()},
        )
        return report

    def _take_in(self, row: LoggedRequest) -> RowResult:
        def result(outcome: RowOutcome, detail: str = "") -> RowResult:
            return RowResult(row.name, row.creation, outcome, detail, row.reference_document)

        if not row.data or not row.data.strip():
            return result(RowOutcome.EMPTY, "no body: Frappe did not send this request")
        try:
            invoices = parse_invoices(row.data)
        except MalformedBody as error:
            return result(RowOutcome.REFUSED, f"400: {error}")
        except InvalidInvoices as error:
            reasons = "; ".join(f"{item.field or 'body'}: {item.message}" for item in error.errors)
            return result(RowOutcome.REFUSED, f"422: {reasons}")
        try:
            admissions = self._intake.accept(invoices, correlation_id=f"{WEBHOOK_ID_PREFIX}{row.name}")
        except ConflictError as conflict:
            keys = ", ".join(str(item.key) for item in conflict.conflicts)
            return result(RowOutcome.REFUSED, f"409: a different invoice is recorded for {keys}")
        if any(admission.action in _NEW for admission in admissions):
            return result(RowOutcome.TAKEN_IN, ", ".join(str(a.invoice.key) for a in admissions))
        states = ", ".join(f"{a.invoice.key} {a.status}" for a in admissions)
        return result(RowOutcome.ALREADY_KNOWN, states)


def window_start(now: float, lookback_seconds: float) -> str:
    """The `since` of a scheduled run: `lookback_seconds` before `now` (epoch seconds), in UTC,
    as the text Frappe compares `creation` with (`YYYY-MM-DD HH:MM:SS`). Frappe writes
    `creation` in the site's own time zone, which is not read: a site east of UTC gets a
    longer window, one west of it a shorter one by at most 12 hours, so a row stays in the
    window for at least `lookback_seconds` - 12 h after it is written (docs/integrating.md,
    "Recovery")."""
    return datetime.fromtimestamp(now - lookback_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
