"""The scheduled recovery (relay.handlers.recover) over the fakes: each run reads the failed
`Webhook Request Log` rows of its window, takes in what is new once, and fails loudly (for the
next run and the alarm) when it cannot read or finish its window."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from test_recovery import ListedRequestLog, attempts

from factories import invoice_dict
from fakes import World
from relay.domain.errors import RecoveryIncompleteError, RequestLogUnavailableError
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.recovery import LoggedRequest, Recovery, window_start
from relay.handlers import recover as handler
from relay.settings import recover_settings

WEBHOOK_URL = "https://relay.example/v1/invoices"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()
ENVIRONMENT = {
    "LEDGER_TABLE_NAME": "ledger",
    "INVOICE_QUEUE_URL": "queue",
    "ERPNEXT_URL": "https://erp.example",
    "ERPNEXT_CREDENTIALS_SECRET_ARN": "erp-arn",
    "RECOVERY_WEBHOOK_URL": WEBHOOK_URL,
    "RECOVERY_LOOKBACK_HOURS": "48",
}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    recover_settings.cache_clear()
    yield ENVIRONMENT
    recover_settings.cache_clear()


def wire(monkeypatch: pytest.MonkeyPatch, world: World, log: object) -> list[str]:
    """The handler's Recovery over `log` and the fakes' intake; the sites it was built for."""
    built: list[str] = []

    def recovery(settings: object) -> Recovery:
        built.append(str(settings.erpnext_url))  # type: ignore[attr-defined]
        return Recovery(log=log, intake=world.acceptance)  # type: ignore[arg-type]

    monkeypatch.setattr(handler, "recovery", recovery)
    return built


def key(order_id: str) -> InvoiceKey:
    return InvoiceKey(order_id, InvoiceType.SALE)


def test_the_window_is_the_lookback_before_now_as_frappe_writes_creation() -> None:
    assert window_start(NOW, 48 * 3600) == "2026-12-01 12:00:00"
    # A row written now by a site 12 hours west of UTC stays in the window for 36 hours
    written_west = "2026-12-03 00:00:00.000000"
    assert written_west >= window_start(NOW + 36 * 3600, 48 * 3600)
    assert written_west < window_start(NOW + 36 * 3600 + 1, 48 * 3600)


@pytest.mark.usefixtures("environment")
def test_each_run_takes_in_the_failed_rows_of_its_window_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five deliveries ERPNext gave up on in the window, and one older than the window
    rows = [
        row for n in range(5) for row in attempts(f"R{n}", invoice_dict(f"FY-S-{n}"), "2026-12-03 11:00:00")
    ]
    rows += attempts("OLD", invoice_dict("FY-S-OLD"), "2026-11-30 09:00:00")
    log = ListedRequestLog(rows)
    wire(monkeypatch, world, log)
    # When the schedule runs
    result = handler.recover_run(lambda: 300.0, clock=lambda: NOW)
    # Then it read its window for the relay's URL, took in each delivery once, and knew the other attempts
    assert log.reads == [(WEBHOOK_URL, "2026-12-01 12:00:00")]
    assert (result["found"], result["takenIn"], result["alreadyKnown"]) == (15, 5, 10)
    assert key("FY-S-OLD") not in world.ledger.entries
    world.drain()
    # When it runs again a quarter of an hour later
    again = handler.recover_run(lambda: 300.0, clock=lambda: NOW + 900)
    world.drain()
    # Then everything is already known, and Fynd got each invoice once
    assert (again["takenIn"], again["alreadyKnown"]) == (0, 15)
    assert [world.fynd.sent[key(f"FY-S-{n}")] for n in range(5)] == [1] * 5


@pytest.mark.usefixtures("environment")
def test_a_run_out_of_time_fails_after_what_it_reached_and_the_next_takes_in_the_rest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given ten failed deliveries and a run with time for the first four rows only
    rows = [attempts(f"R{n}", invoice_dict(f"FY-T-{n}"), "2026-12-03 11:00:00")[0] for n in range(10)]
    wire(monkeypatch, world, ListedRequestLog(rows))
    started: list[int] = []

    def seconds_left() -> float:
        started.append(1)
        return 300.0 if len(started) <= 4 else 10.0

    # When the schedule runs, Then it fails (the function's Errors: the alarm), keeping what it took in
    with pytest.raises(RecoveryIncompleteError):
        handler.recover_run(seconds_left, clock=lambda: NOW)
    assert sorted(k.order_id for k in world.ledger.entries) == [f"FY-T-{n}" for n in range(4)]
    # When the next run has time, Then it takes in the rest, and nothing reaches Fynd twice
    result = handler.recover_run(lambda: 300.0, clock=lambda: NOW + 900)
    assert (result["takenIn"], result["alreadyKnown"]) == (6, 4)
    world.drain()
    assert [world.fynd.sent[key(f"FY-T-{n}")] for n in range(10)] == [1] * 10


@pytest.mark.usefixtures("environment")
def test_a_run_that_cannot_read_the_log_fails_and_changes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Down:
        def failed_requests(self, *, url: str, since: str) -> list[LoggedRequest]:
            raise RequestLogUnavailableError("ERPNext answered 502 to a Webhook Request Log read")

    wire(monkeypatch, world, Down())
    with pytest.raises(RequestLogUnavailableError):
        handler.recover_run(lambda: 300.0, clock=lambda: NOW)
    assert world.ledger.entries == {}


def test_without_an_erpnext_site_a_run_reads_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    monkeypatch.setenv("ERPNEXT_URL", "")
    recover_settings.cache_clear()
    built = wire(monkeypatch, world, ListedRequestLog([]))
    assert handler.recover_run(lambda: 300.0, clock=lambda: NOW) == {"skipped": "ERPNEXT_URL is not set"}
    assert built == []


def test_the_scheduled_recovery_reads_the_log_with_the_write_back_key_pair(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    # Given the ERPNext key pair secret the write-back uses
    from relay import wiring

    monkeypatch.setattr(wiring, "erpnext_token", lambda arn: f"key-of-{arn}:secret-of-{arn}")
    intake = World().acceptance
    monkeypatch.setattr(wiring, "_recovery_intake", lambda: intake)
    # When recovery is built for a run
    recovery = wiring.recovery(recover_settings())
    # Then it reads the site's Webhook Request Log as that user
    log = recovery._log
    assert log._authorization == "token key-of-erp-arn:secret-of-erp-arn"  # type: ignore[attr-defined]
    assert log._url == "https://erp.example/api/resource/Webhook%20Request%20Log"  # type: ignore[attr-defined]
    assert recovery._intake is intake
