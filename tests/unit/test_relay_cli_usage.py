"""The `relay` command as a first-time user meets it: options where they are typed, the exit
code the docs give for what is missing, and a smoke test that says what it is doing.

Through `relay_cli.app.main` in this process, over a fake of the relay's API (unit tests touch
no network)."""

from collections.abc import Iterator
from typing import Any

import pytest

from relay_cli import app as relay_app
from relay_cli.smoke import run_smoke
from relay_cli.webhook import Answer

SECRET = "whsec_TE9DQUwtT05MWS1ub3QtYS1zZWNyZXQh"
NOWHERE = "http://127.0.0.1:9"
ELSEWHERE = "http://127.0.0.1:3999"


@pytest.fixture(autouse=True)
def no_relay_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RELAY_STACK", "RELAY_API_URL", "RELAY_AWS_ENDPOINT", "WEBHOOK_SECRET", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


def relay(*argv: str) -> int:
    with pytest.raises(SystemExit) as ended:
        relay_app.main(list(argv))
    return int(ended.value.code or 0)


@pytest.mark.parametrize(
    "argv",
    [
        ("status", "FY-1", "--api-url", ELSEWHERE, "--secret", SECRET),
        ("status", "--api-url=" + ELSEWHERE, "FY-1", "--secret=" + SECRET, "--type", "return"),
        ("--secret", SECRET, "status", "FY-1", "--api-url", ELSEWHERE),
    ],
)
def test_global_options_work_after_the_command_too(
    argv: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a relay API (a fake) and the relay's own options typed after the command, as people do
    opened: list[tuple[str, str]] = []

    def api(url: str, secret: str) -> FakeApi:
        opened.append((url, secret))
        return FakeApi([{"status": "QUEUED"}])

    monkeypatch.setattr(relay_app, "RelayApi", api)
    # When the command runs
    code = relay(*argv)
    # Then they are taken: the API and the secret named are the ones used
    assert code == 0
    assert opened == [(ELSEWHERE, SECRET)]


def test_hoisting_moves_only_the_global_options_and_nothing_after_a_double_dash() -> None:
    argv = ["replay", "FY-1", "--reason", "fixed", "--stack", "S", "--", "--region"]
    assert relay_app.hoist_global_options(argv) == [
        "--stack",
        "S",
        "replay",
        "FY-1",
        "--reason",
        "fixed",
        "--",
        "--region",
    ]
    assert relay_app.hoist_global_options(["--help"]) == ["--help"]


def test_a_missing_secret_is_bad_usage_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    # Given no WEBHOOK_SECRET and no --secret
    # When a command that signs runs
    code = relay("status", "FY-1", "--api-url", NOWHERE)
    # Then it exits 2, as the docs say for bad usage, and names what to set
    assert code == 2
    assert "WEBHOOK_SECRET" in capsys.readouterr().err


class FakeApi:
    """The relay's API as smoke sees it: accepts the POST, then answers statuses in turn."""

    def __init__(self, statuses: list[dict[str, Any] | KeyboardInterrupt]) -> None:
        self.statuses: Iterator[dict[str, Any] | KeyboardInterrupt] = iter(statuses)
        self.posted: list[str] = []

    def post(self, body: str) -> Answer:
        self.posted.append(body)
        return Answer(202, {"invoices": []})

    def status(self, order_id: str, invoice_type: str = "sale") -> Answer:
        document = next(self.statuses)
        if isinstance(document, KeyboardInterrupt):
            raise document
        return Answer(200, {"orderId": order_id, **document})


def test_smoke_says_its_order_first_then_each_change_and_that_it_still_waits() -> None:
    # Given a relay where the smoke invoice is queued, then retried for a while, then invoiced
    statuses: list[dict[str, Any] | KeyboardInterrupt] = [
        {"status": "QUEUED"},
        *[{"status": "RETRYING", "lastError": {"code": "fynd_unavailable"}}] * 25,
        {"status": "INVOICED"},
    ]
    api = FakeApi(statuses)
    now = [0.0]
    lines: list[str] = []
    # When smoke runs against it (one poll a second on a fake clock)
    result = run_smoke(
        api,  # type: ignore[arg-type]
        location=None,
        order_id="SMOKE-T1",
        timeout=120,
        progress=lines.append,
        clock=lambda: now[0],
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
    )
    # Then it passed, and it said the order before sending, each change, and every 10 s of waiting
    assert result.passed
    assert "SMOKE-T1" in lines[0]
    assert "SMOKE-T1" in lines[1]
    waiting = lines[2:]
    assert "QUEUED" in waiting[0]
    assert "RETRYING (last error fynd_unavailable)" in waiting[1]
    assert len([line for line in waiting if "RETRYING" in line]) == 3  # at 1 s, 11 s and 21 s


def test_smoke_stopped_with_ctrl_c_names_its_order(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a relay that has accepted the smoke invoice
    monkeypatch.setattr(
        relay_app, "RelayApi", lambda *_: FakeApi([{"status": "QUEUED"}, KeyboardInterrupt()])
    )
    # When the user presses Ctrl-C while smoke waits
    code = relay("smoke", "--order", "SMOKE-T2", "--api-url", NOWHERE, "--secret", SECRET)
    # Then it says which order it sent and how to look it up, and exits 1 (not final)
    err = capsys.readouterr().err
    assert code == 1
    assert "relay status SMOKE-T2" in err
