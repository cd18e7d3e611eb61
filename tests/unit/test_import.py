"""Handlers import like a cold start: no settings read, no AWS or network touched at import."""

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "functions"


def test_handlers_import_without_environment_or_network() -> None:
    # Given a fresh interpreter with no relay settings, no AWS endpoint and sockets refused
    script = textwrap.dedent(
        """
        import socket
        def refuse(*args, **kwargs):
            raise AssertionError("network touched at import time")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import relay.handlers.ingest, relay.handlers.dispatch, relay.handlers.reconcile, relay.handlers.recover
        print("imported")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC)}
    # When every handler module is imported
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    # Then they import cleanly
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


HEAVY_MODULES = ("aws_xray_sdk", "wrapt")
"""Loaded only when the X-Ray SDK is enabled: together they cost about what boto3 does to import."""


def loaded_after_import(environment: dict[str, str]) -> set[str]:
    script = textwrap.dedent(
        """
        import sys
        import relay.handlers.ingest, relay.handlers.dispatch, relay.handlers.reconcile, relay.handlers.recover
        print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), **environment}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    return set(result.stdout.split())


def test_a_cold_import_with_default_settings_loads_no_tracing_sdk() -> None:
    # Given the template's default settings: tracing by Lambda, the X-Ray SDK off
    environment = {"POWERTOOLS_SERVICE_NAME": "invoice-relay", "RELAY_XRAY_SDK": "false"}
    # When every handler module is imported in a fresh interpreter
    loaded = loaded_after_import(environment)
    # Then the relay and boto3 are loaded, and none of the SDK's heavy modules
    assert {"relay", "boto3", "pydantic"} <= loaded
    assert loaded.isdisjoint(HEAVY_MODULES), sorted(loaded & set(HEAVY_MODULES))


def test_the_tracing_sdk_loads_at_the_first_invocation_when_enabled() -> None:
    # Given the X-Ray SDK enabled, as Lambda runs a function (LAMBDA_TASK_ROOT set)
    script = textwrap.dedent(
        """
        import sys
        from relay.observability import tracer
        before = "aws_xray_sdk" in sys.modules
        sdk = tracer.sdk()
        print(before, type(sdk).__name__, "aws_xray_sdk" in sys.modules)
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(SRC),
        "RELAY_XRAY_SDK": "true",
        "POWERTOOLS_SERVICE_NAME": "invoice-relay",
    }
    # When the tracer is first used
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    # Then the import loaded no SDK, and the first use built Powertools' Tracer over it
    assert result.stdout.split() == ["False", "Tracer", "True"]
