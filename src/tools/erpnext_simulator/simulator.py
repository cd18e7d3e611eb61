"""The in-process handle: start a simulated ERPNext site on a thread, reach into it, stop it.

with ErpnextSimulator() as erp:                 # 127.0.0.1, a free port
    erp.site.insert("Sales Invoice", {...})
    client = ...(erp.url, erp.api_key, erp.api_secret)
    erp.faults.add(Fault("status", status=503, count=2))
"""

import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from erpnext_simulator.doctypes import DocTypeMeta
from erpnext_simulator.faults import Faults
from erpnext_simulator.server import SiteServer
from erpnext_simulator.site import DEFAULT_API_KEY, DEFAULT_API_SECRET, FrappeSite


class ErpnextSimulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        quiet: bool = True,
        site: FrappeSite | None = None,
        doctypes: Iterable[DocTypeMeta] = (),
    ) -> None:
        self.site = site or FrappeSite()
        for meta in doctypes:
            self.site.define(meta)
        self.faults = Faults()
        self.api_key, self.api_secret = DEFAULT_API_KEY, DEFAULT_API_SECRET
        self._address = (host, port)
        self._quiet = quiet
        self._server: SiteServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = SiteServer(self._address, self.site, self.faults, self._quiet)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="erpnext-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8000 (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        host = self._address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self._server.server_address[1]}"

    @property
    def authorization(self) -> str:
        return f"token {self.api_key}:{self.api_secret}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
