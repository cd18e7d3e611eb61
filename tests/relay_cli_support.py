"""Running the `relay` command against a LocalPipeline, as an operator would.

`run_relay` runs the installed console script in a child process (the relay's functions
log to this process's stdout, which must not mix with the command's), pointed at the
pipeline's API and AWS endpoint, and returns its exit code, stdout and stderr apart, so
`--json` output can be parsed whole.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay_client import RelayClient

RELAY_SCRIPT = shutil.which("relay", path=str(Path(sys.executable).parent))
_OWN_VARIABLES = ("RELAY_STACK", "RELAY_API_URL", "RELAY_AWS_ENDPOINT", "WEBHOOK_SECRET")


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_relay(relay: RelayClient, *args: str, target: tuple[str, ...] | None = None) -> Run:
    pipeline = relay.pipeline
    where = target or (
        "--api-url",
        pipeline.api_url,
        "--endpoint-url",
        pipeline.moto.url,
        "--secret",
        relay.secret,
    )
    assert RELAY_SCRIPT is not None, "the `relay` console script is not installed: make install"
    environment = {name: value for name, value in os.environ.items() if name not in _OWN_VARIABLES}
    done = subprocess.run(
        [RELAY_SCRIPT, *where, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)
