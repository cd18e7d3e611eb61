"""`python -m relay_local invoke FUNCTION EVENT_FILE...`: one function, once per event, as
`sam local invoke FUNCTION -e EVENT_FILE` would run it, without Docker.

A fresh local stack is built for the call (moto with the template's resources, the Fynd
simulator unless FYND_BASE_URL is set), the function gets the template's environment and
its handler runs in this process with a Lambda context. Several event files run in order
against the same stack, so `invoke IngestFunction post.json get-status.json` shows a
status query finding the invoice the first event accepted.

The stack verifies webhooks with LOCAL_WEBHOOK_SECRET, the secret events/ is signed with.
Those events carry a fixed, long-past signing time; Standard Webhooks refuses timestamps
more than 5 minutes old, so an event whose signature matches the local secret is re-signed
with the current time first (and a note says so). An event signed with any other secret
is left as it is, and the function answers 401, as it would in AWS.

The answer goes to stdout as JSON; logs go to stderr, so the answer can be piped. Exit 0
when the function returned, 1 when it failed (the answer is then Lambda's error shape).
"""

import json
import sys
import time
from collections.abc import Mapping
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, TextIO

from relay.domain.standard_webhooks import TIMESTAMP_TOLERANCE_SECONDS
from relay_local.console import Console, FunctionOutput
from relay_local.environment import fynd_settings, writeback_targets
from relay_local.pipeline import LocalPipeline, PipelineConfig
from relay_local.signing import LOCAL_WEBHOOK_SECRET, signature_matches, signed_content, signed_headers


class InvokeError(Exception):
    """The command cannot run (unknown function, unreadable event); the message says why."""


def load_event(path: Path) -> dict[str, Any]:
    try:
        event = json.loads(path.read_text())
    except OSError as error:
        raise InvokeError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise InvokeError(f"{path} is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise InvokeError(f"{path} must hold a JSON object (a Lambda event)")
    return event


def refresh_signature(event: dict[str, Any], secret: str, now: float) -> bool:
    """Re-sign a stale HTTP event that `secret` signed; True when it did (the event is changed)."""
    headers = event.get("headers")
    if not isinstance(headers, dict) or "webhook-timestamp" not in headers:
        return False
    timestamp = str(headers["webhook-timestamp"])
    if timestamp.isdigit() and abs(now - int(timestamp)) <= TIMESTAMP_TOLERANCE_SECONDS:
        return False
    content = signed_content(event)
    if event.get("isBase64Encoded") or not signature_matches(secret, content, headers):
        return False
    headers.update(signed_headers(secret, content, msg_id=headers["webhook-id"], at=now))
    return True


def invoke(
    function_name: str,
    event_paths: list[Path],
    config: PipelineConfig,
    *,
    out: TextIO,
    notes: TextIO,
) -> int:
    """Run `function_name` once per event file on a fresh local stack; print each answer."""
    events = [(path, load_event(path)) for path in event_paths]
    pipeline = LocalPipeline(config)
    with pipeline:
        function = pipeline.functions.get(function_name)
        if function is None:
            known = ", ".join(sorted(pipeline.functions))
            raise InvokeError(f"no function {function_name!r} in the template; functions: {known}")
        failed = False
        for path, event in events:
            if refresh_signature(event, config.webhook_secret, time.time()):
                print(f"note: {path} was signed long ago; re-signed it with the current time", file=notes)
            try:
                answer = function.invoke(event)
            except Exception as error:  # any handler failure is the function's answer, as in Lambda
                failed = True
                answer = {"errorType": type(error).__name__, "errorMessage": str(error)}
            notes.flush()
            print(json.dumps(answer, indent=2), file=out, flush=True)
    return 1 if failed else 0


def invoke_config(
    environ: Mapping[str, str], template: Path, parameters: Mapping[str, str]
) -> PipelineConfig:
    """The stack `invoke` runs on: no HTTP API, no consumer, the local secret, Fynd from the env."""
    fynd = fynd_settings(environ)
    return PipelineConfig(
        webhook_secret=LOCAL_WEBHOOK_SECRET,
        serve_api=False,
        consume=False,
        template_path=template,
        parameters=parameters,
        fynd_base_url=fynd.base_url,
        fynd_username=fynd.username,
        fynd_password=fynd.password,
        writeback=writeback_targets(environ),
    )


def main(function_name: str, event_paths: list[Path], config: PipelineConfig, *, raw_logs: bool) -> int:
    """The functions' stdout (their logs) goes to stderr, readable unless `raw_logs`."""
    answers = sys.stdout
    logs = FunctionOutput(Console(sys.stderr, live=False), raw=raw_logs)
    try:
        with redirect_stdout(logs):
            return invoke(function_name, event_paths, config, out=answers, notes=sys.stderr)
    except InvokeError as error:
        print(f"invoke: {error}", file=sys.stderr)
        return 2
