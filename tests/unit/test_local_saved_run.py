"""`make run` keeps its secret and ports between runs (relay_local.saved_run), and its banner
prints the `export` line the `relay` command needs."""

import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from relay_local import saved_run
from relay_local.environment import SecretOrigin, run_settings
from relay_local.run import banner, keep
from relay_local.saved_run import SavedRun
from relay_local.signing import new_secret


class Stack:
    def event_source(self, _: str) -> Any:
        return SimpleNamespace(queue_url="q", batch_size=100, batching_window_seconds=2, max_concurrency=2)


class Sqs:
    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"VisibilityTimeout": "660", "RedrivePolicy": '{"maxReceiveCount": 8}'}}


class Pipeline:
    """What banner() and keep() read of a started LocalPipeline."""

    def __init__(self, moto_port: int, simulator_port: int = 43001) -> None:
        self.stack = Stack()
        self.api_url = "http://127.0.0.1:3000"
        self.fynd_base_url = f"http://127.0.0.1:{simulator_port}"
        self.moto = SimpleNamespace(url=f"http://127.0.0.1:{moto_port}")
        self.simulator = SimpleNamespace(url=f"http://127.0.0.1:{simulator_port}")
        self.config = SimpleNamespace(template_path=Path("template.yaml"))

    def sqs(self) -> Sqs:
        return Sqs()


def first_then_second_run(state: Path, environ: dict[str, str]) -> tuple[Any, Any]:
    first = run_settings(environ, saved_run.load(state))
    keep(state, first, Pipeline(moto_port=42001))  # type: ignore[arg-type]
    second = run_settings(environ, saved_run.load(state))
    return first, second


def test_a_restart_keeps_the_secret_and_the_aws_endpoint_port(tmp_path: Path) -> None:
    # Given a first `make run` with nothing kept, which then kept what it made
    state = tmp_path / ".local" / "run.json"
    first, second = first_then_second_run(state, {})
    # When the second run reads its settings
    # Then it verifies with the same secret and asks for the same ports
    assert first.secret_origin is SecretOrigin.GENERATED
    assert second.secret_origin is SecretOrigin.KEPT
    assert second.webhook_secret == first.webhook_secret
    assert (second.aws_port, second.simulator_port) == (42001, 43001)
    # And the file holding a secret is the user's alone
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_fresh_forgets_what_was_kept(tmp_path: Path) -> None:
    # Given a kept run
    state = tmp_path / "run.json"
    first, _ = first_then_second_run(state, {})
    # When the user asks for a fresh start (make run FRESH=1)
    assert saved_run.forget(state)
    fresh = run_settings({}, saved_run.load(state))
    # Then a new secret is made and no port is asked for
    assert fresh.secret_origin is SecretOrigin.GENERATED
    assert fresh.webhook_secret != first.webhook_secret
    assert (fresh.aws_port, fresh.simulator_port) == (0, 0)


def test_webhook_secret_wins_and_is_not_written(tmp_path: Path) -> None:
    # Given a kept run, then WEBHOOK_SECRET set by the user
    state = tmp_path / "run.json"
    first, _ = first_then_second_run(state, {})
    mine = new_secret()
    settings = run_settings({"WEBHOOK_SECRET": mine}, saved_run.load(state))
    # When that run keeps its state
    keep(state, settings, Pipeline(moto_port=42002))  # type: ignore[arg-type]
    # Then it verified with the user's secret, and the kept one is untouched
    assert (settings.webhook_secret, settings.secret_origin) == (mine, SecretOrigin.ENVIRONMENT)
    kept = saved_run.load(state)
    assert kept is not None
    assert (kept.webhook_secret, kept.aws_port) == (first.webhook_secret, 42001)


@pytest.mark.parametrize("text", ["", "{", '{"webhook_secret": "not-whsec"}', '{"webhook_secret": 1}', "[]"])
def test_an_unreadable_kept_file_counts_as_none(tmp_path: Path, text: str) -> None:
    state = tmp_path / "run.json"
    state.write_text(text)
    assert saved_run.load(state) is None
    assert run_settings({}, saved_run.load(state)).secret_origin is SecretOrigin.GENERATED


def test_the_banner_prints_the_export_line_for_relay_and_says_the_secret_is_kept(tmp_path: Path) -> None:
    # Given a second run whose kept AWS port was free again
    state = tmp_path / "run.json"
    saved_run.save(state, SavedRun(new_secret(), aws_port=42001, simulator_port=43001))
    settings = run_settings({}, saved_run.load(state))
    # When its banner is printed
    text = banner(Pipeline(moto_port=42001), settings, 2.4, state)  # type: ignore[arg-type]
    # Then it has the line to paste for the `relay` command, and says where the secret is kept
    assert (
        "export RELAY_API_URL=http://127.0.0.1:3000 RELAY_AWS_ENDPOINT=http://127.0.0.1:42001"
        f" WEBHOOK_SECRET={settings.webhook_secret}"
    ) in text
    assert f"kept from the last run in {state}" in text
    assert "FRESH=1" in text
    assert "was taken" not in text


def test_the_banner_says_when_the_kept_aws_port_was_taken(tmp_path: Path) -> None:
    # Given a kept AWS port that something else holds now (the run took another)
    settings = run_settings({}, SavedRun(new_secret(), aws_port=42001))
    # When the banner is printed for the port it got
    text = banner(Pipeline(moto_port=42777), settings, 2.4, tmp_path / "run.json")  # type: ignore[arg-type]
    # Then it says the endpoint changed, so the user exports it again
    assert "port 42001 of the last run was taken, so RELAY_AWS_ENDPOINT changed" in text
    assert "RELAY_AWS_ENDPOINT=http://127.0.0.1:42777" in text


def test_a_kept_port_that_is_taken_is_not_asked_for(tmp_path: Path) -> None:
    import socket

    from relay_local.run import pipeline_config

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = run_settings({}, SavedRun(new_secret(), aws_port=taken, simulator_port=taken))
        config = pipeline_config(settings, Path("template.yaml"), {})
    assert (config.aws_port, config.simulator_port) == (0, 0)
