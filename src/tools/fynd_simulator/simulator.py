"""The in-process handle on a simulator: start it on a thread, read its state, stop it.

with FyndSimulator() as sim:          # 127.0.0.1, a free port
    client = FyndClient(base_url=sim.url, ...)
    ...
    assert sim.state.invoice_count("ORD-1") == 1
"""

import threading
from types import TracebackType
from typing import Self, Unpack

from fynd_simulator.server import SimulatorServer
from fynd_simulator.state import SimulatorState, StateOptions


class FyndSimulator:
    """A Fynd Konnect stand-in on a background thread; `with FyndSimulator() as sim:`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        quiet: bool = True,
        state: SimulatorState | None = None,
        **options: Unpack[StateOptions],
    ) -> None:
        """Serves `state`, or a new SimulatorState made with `options` (username, token_ttl, ...)."""
        if state is not None and options:
            raise TypeError("pass a SimulatorState or the options to make one, not both")
        self.state = state or SimulatorState(**options)
        self._address = (host, port)
        self._quiet = quiet
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind (port 0 picks a free one) and serve on a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = SimulatorServer(self._address, self.state, self._quiet)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fynd-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()
        server.drop_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8900 (no trailing slash)."""
        host = self._address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
