"""What `make run` keeps between runs: its signing secret and its ports, in `.local/run.json`.

A user who exported the banner's values (WEBHOOK_SECRET, RELAY_AWS_ENDPOINT) and restarts
`make run` must find them still true: a new secret answers every signed request with
`401 no matching signature` and no hint why, and a new AWS endpoint port leaves `relay`
pointing at nothing. So the first run generates them and writes them here (git-ignored,
readable by the user only); later runs read them back. `make run FRESH=1` (`run --fresh`)
forgets them and starts over; WEBHOOK_SECRET, when set, wins over the kept secret.

A kept port that something else took meanwhile is not fought for: the run takes a free one,
says so in the banner, and keeps that one next time. A file that cannot be read as a kept
run (edited by hand, from another version) is treated as absent and written afresh.
`RELAY_LOCAL_STATE` names another file (the tests use a temporary one).
"""

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from relay_local.signing import check_secret

DEFAULT_PATH = Path(__file__).resolve().parents[3] / ".local" / "run.json"
"""`.local/run.json` in the project (`.gitignore` lists `.local/`)."""


@dataclass(frozen=True)
class SavedRun:
    webhook_secret: str
    aws_port: int = 0
    """The local AWS endpoint's (moto's) port; 0: none kept."""
    simulator_port: int = 0
    """The Fynd simulator's port; 0: none kept."""


def state_path(environ: Mapping[str, str]) -> Path:
    return Path(environ["RELAY_LOCAL_STATE"]) if environ.get("RELAY_LOCAL_STATE") else DEFAULT_PATH


def load(path: Path) -> SavedRun | None:
    """The kept run, or None when there is none (or none that can be used)."""
    try:
        document = json.loads(path.read_text())
        saved = SavedRun(
            webhook_secret=str(document["webhook_secret"]),
            aws_port=_port(document.get("aws_port", 0)),
            simulator_port=_port(document.get("simulator_port", 0)),
        )
        check_secret(saved.webhook_secret)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return saved


def save(path: Path, saved: SavedRun) -> None:
    """Write the run to keep, readable by the user only (it holds a signing secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(saved), indent=2) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text)


def forget(path: Path) -> bool:
    """Start over (`--fresh`); True when there was something to forget."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def port_is_free(port: int) -> bool:
    """True when 127.0.0.1:`port` can be bound now (0 always can: any free port)."""
    if port == 0:
        return True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError("not a port")
    return value
