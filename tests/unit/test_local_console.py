"""The local run's terminal: Powertools JSON in, one readable line out; EMF summed, not shown."""

import io
import json
import threading
from typing import Any

import pytest

from relay_local.console import Console, FunctionOutput, wants_colour
from relay_local.invocation import traced

LOG = {
    "level": "ERROR",
    "location": "_answer:159",
    "message": "invoice rejected by Fynd",
    "timestamp": "2025-01-01 10:00:00,123+0000",
    "service": "invoice-relay",
    "function_name": "IngestFunction",  # what a shared Logger may wrongly say
    "correlation_id": "msg_someone_else",
    "invoice_key": "CANCELLED-1#sale",
    "attempt": 1,
    "code": "IN401",
    "fynd_message": "Order or order item already cancelled",
}
EMF = {
    "_aws": {
        "Timestamp": 1,
        "CloudWatchMetrics": [
            {
                "Namespace": "FyndInvoiceRelay",
                "Dimensions": [["service"]],
                "Metrics": [
                    {"Name": "InvoicesInvoiced", "Unit": "Count"},
                    {"Name": "FyndCallLatency", "Unit": "Milliseconds"},
                ],
            }
        ],
    },
    "service": "invoice-relay",
    "InvoicesInvoiced": [2.0],
    "FyndCallLatency": [48.4],
}


class Context:
    aws_request_id = "req-1"


def output(*, raw: bool = False) -> tuple[io.StringIO, FunctionOutput]:
    screen = io.StringIO()
    return screen, FunctionOutput(Console(screen, live=False), raw=raw)


def test_a_log_object_becomes_one_line_labelled_by_the_invocation_that_wrote_it() -> None:
    # Given the dispatcher, invoked for a batch, logging through a Logger another function last set
    screen, functions = output()

    def dispatcher(event: dict[str, Any], context: Any) -> None:
        functions.write(json.dumps(LOG) + "\n")

    # When it runs
    traced("DispatchFunction", dispatcher)({"Records": []}, Context())
    # Then one line: time, its own function, level, message, the invoice first
    line = screen.getvalue().rstrip("\n")
    assert "\n" not in line
    assert line.split()[1:5] == ["dispatch", "ERROR", "invoice", "rejected"]
    assert 'invoice_key=CANCELLED-1#sale code=IN401 attempt=1 fynd_message="Order or order' in line


def test_a_dispatcher_line_about_no_invoice_shows_no_foreign_correlation_id() -> None:
    # Given a dispatcher line that names no invoice, logged through a Logger ingest last set
    screen, functions = output()
    batch_line = {
        key: value for key, value in LOG.items() if key not in ("invoice_key", "code", "fynd_message")
    }

    def dispatcher(event: dict[str, Any], context: Any) -> None:
        functions.write(json.dumps(batch_line) + "\n")

    # When it runs
    traced("DispatchFunction", dispatcher)({"Records": []}, Context())
    # Then ingest's correlation id does not appear on it
    assert "msg_someone_else" not in screen.getvalue()


def test_a_dispatcher_line_about_an_invoice_shows_the_webhook_that_brought_it() -> None:
    # Given the dispatcher logging about an invoice, naming the webhook that accepted it
    screen, functions = output()
    about_invoice = {key: value for key, value in LOG.items() if key != "function_name"}
    about_invoice["correlation_id"] = "msg_from_the_erp"

    def dispatcher(event: dict[str, Any], context: Any) -> None:
        functions.write(json.dumps(about_invoice) + "\n")

    # When it runs
    traced("DispatchFunction", dispatcher)({"Records": []}, Context())
    # Then the line carries that webhook id
    assert screen.getvalue().rstrip().endswith("corr=msg_from_the_erp")


def test_ingest_lines_carry_the_webhook_id_as_correlation_id() -> None:
    screen, functions = output()

    def ingest(event: dict[str, Any], context: Any) -> None:
        functions.write(json.dumps({**LOG, "level": "INFO", "message": "invoices accepted"}) + "\n")

    traced("IngestFunction", ingest)({"headers": {"webhook-id": "msg_1"}}, Context())
    assert screen.getvalue().rstrip().endswith("corr=msg_1")


def test_emf_lines_are_summed_not_shown_and_other_lines_pass_through() -> None:
    # Given two EMF documents and a line that is not JSON
    screen, functions = output()
    # When the functions print them
    functions.write(json.dumps(EMF) + "\n" + json.dumps(EMF) + "\nplain text\n")
    # Then only the plain line shows, and the counts are summed (timings are not counts)
    assert screen.getvalue() == "plain text\n"
    assert functions.metrics_summary() == "metrics (EMF, summed): InvoicesInvoiced 4"


def test_raw_mode_shows_everything_as_cloudwatch_would_get_it() -> None:
    screen, functions = output(raw=True)
    functions.write(json.dumps(EMF) + "\n")
    assert json.loads(screen.getvalue()) == EMF


def test_lines_written_in_pieces_by_parallel_threads_never_mix() -> None:
    # Given two threads writing a line each in two pieces, interleaved
    screen, functions = output()
    first_half_written, second_thread_done = threading.Event(), threading.Event()

    def first() -> None:
        functions.write("alpha ")
        first_half_written.set()
        second_thread_done.wait()
        functions.write("one\n")

    def second() -> None:
        first_half_written.wait()
        functions.write("beta ")
        functions.write("two\n")
        second_thread_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then each line is whole
    assert screen.getvalue().splitlines() == ["beta two", "alpha one"]


def test_on_a_terminal_the_tally_is_redrawn_in_place_under_the_logs() -> None:
    screen = io.StringIO()
    console = Console(screen, live=True)
    console.status("tally 1")
    console.print("a log line")
    console.status("tally 2")
    console.close()
    assert screen.getvalue() == "\r\x1b[Ktally 1\r\x1b[Ka log line\ntally 1\r\x1b[Ktally 2\n"


class Terminal(io.StringIO):
    """A screen that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_error_and_warning_lines_stand_out_in_colour() -> None:
    # Given the run's console on a terminal that wants colour
    screen = Terminal()
    functions = FunctionOutput(Console(screen, live=False, colour=wants_colour(screen, {"TERM": "xterm"})))
    # When the functions log an ERROR, a WARNING and an INFO line
    for level in ("ERROR", "WARNING", "INFO"):
        functions.write(json.dumps({**LOG, "level": level}) + "\n")
    # Then ERROR is red, WARNING yellow (level and message), INFO plain
    error, warning, info = screen.getvalue().splitlines()
    assert "\x1b[1;31mERROR  \x1b[0m \x1b[1;31minvoice rejected by Fynd\x1b[0m" in error
    assert "\x1b[1;33mWARNING\x1b[0m" in warning
    assert "\x1b[" not in info


@pytest.mark.parametrize(
    ("screen", "environ"),
    [
        (io.StringIO(), {"TERM": "xterm"}),  # a pipe, a file, a test
        (Terminal(), {"TERM": "xterm", "NO_COLOR": "1"}),  # no-color.org
        (Terminal(), {"TERM": "dumb"}),
    ],
)
def test_no_colour_off_a_terminal_or_when_the_user_says_no(
    screen: io.StringIO, environ: dict[str, str]
) -> None:
    # Given a console where colour is not wanted
    functions = FunctionOutput(Console(screen, live=False, colour=wants_colour(screen, environ)))
    # When an ERROR line is logged / Then it is plain text
    functions.write(json.dumps(LOG) + "\n")
    assert "ERROR" in screen.getvalue()
    assert "\x1b" not in screen.getvalue()
