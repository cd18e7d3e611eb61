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
        import relay.handlers.ingest, relay.handlers.dispatch, relay.handlers.reconcile
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
