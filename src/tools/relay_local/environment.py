"""The environment variables the local commands honour (docs/interface.md, "Running locally"), read once.

| variable | default | meaning |
| --- | --- | --- |
| RELAY_API_PORT | 3000 | port of the local HTTP API (0: any free port; the banner shows it) |
| FYND_BASE_URL | the built-in simulator | send to this Fynd instead |
| FYND_USERNAME / FYND_PASSWORD | the simulator's | Fynd company-level credentials |
| WEBHOOK_SECRET | kept from the last run, else generated; printed | the whsec_... secret the local API verifies |
| RELAY_LOCAL_STATE | .local/run.json | where `run` keeps its secret and ports between runs (relay_local.saved_run) |
| FRAPPE_WEBHOOK_SECRET | unset | when set, enables the `frappe` preset with this plain secret (ERPNext's "Webhook Secret") |
| ERPNEXT_SIMULATOR | unset | `1`: also start the ERPNext simulator (relay_local.erpnext), its Webhooks pointed at the local API; a `frappe` secret is generated unless FRAPPE_WEBHOOK_SECRET is set |
| ERPNEXT_SIMULATOR_PORT | 8000 | its port (0: any free port) |
| RETRY_BASE_SECONDS, RETRY_MAX_SECONDS, LEASE_SECONDS, FYND_CONNECT_TIMEOUT_SECONDS, FYND_READ_TIMEOUT_SECONDS, RECORD_RESERVE_SECONDS | the dispatcher's | handed to the functions, e.g. for fast retries in tests |
| ERPNEXT_URL | unset | when set, the ERPNext (Frappe) site final states are written back to (`Fynd Invoice Sync`), and whose failed `Webhook Request Log` rows for the local API are recovered every 15 minutes (RecoverFunction) |
| ERPNEXT_API_KEY / ERPNEXT_API_SECRET | unset | the API key pair of the ERPNext user the relay writes as |
| RELAY_CALLBACK_URL / RELAY_CALLBACK_SECRET | unset | when set, every final state is POSTed there, signed with this whsec_... secret |
| WRITEBACK_RETRY_BASE_SECONDS, WRITEBACK_RETRY_MAX_SECONDS | the write-back's | its back-off, e.g. short for tests |
| RELAY_LOCAL_FAULT_* | off | faults to inject (relay_local.faults) |

A malformed value stops the command before anything starts, with a message naming it.
"""

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from fynd_simulator import DEFAULT_PASSWORD, DEFAULT_USERNAME
from relay.domain.standard_webhooks import MIN_SECRET_BYTES
from relay_local.faults import LocalFaults
from relay_local.saved_run import SavedRun
from relay_local.signing import check_secret, new_secret

DEFAULT_API_PORT = 3000
DEFAULT_API_URL = f"http://127.0.0.1:{DEFAULT_API_PORT}"
FUNCTION_PASSTHROUGH = (
    "RETRY_BASE_SECONDS",
    "RETRY_MAX_SECONDS",
    "LEASE_SECONDS",
    "FYND_CONNECT_TIMEOUT_SECONDS",
    "FYND_READ_TIMEOUT_SECONDS",
    "RECORD_RESERVE_SECONDS",
    "WRITEBACK_RETRY_BASE_SECONDS",
    "WRITEBACK_RETRY_MAX_SECONDS",
)
"""Dispatcher and write-back settings the template does not set, so a local run may: fast
retries for tests."""


class SettingsError(ValueError):
    """A variable is set to something the local run cannot use; the message names it."""


@dataclass(frozen=True)
class FyndSettings:
    base_url: str | None
    username: str
    password: str


class SecretOrigin(StrEnum):
    ENVIRONMENT = "environment"
    """WEBHOOK_SECRET was set."""
    KEPT = "kept"
    """Read back from the last run (relay_local.saved_run)."""
    GENERATED = "generated"
    """Made for this run (the first, or after `--fresh`)."""


@dataclass(frozen=True)
class WritebackTargets:
    """Where final states are written back (docs/interface.md, "Back to the ERP"); None: nowhere."""

    erpnext_url: str | None = None
    erpnext_api_key: str = ""
    erpnext_api_secret: str = ""
    callback_url: str | None = None
    callback_secret: str = ""

    @property
    def any(self) -> bool:
        return bool(self.erpnext_url or self.callback_url)


@dataclass(frozen=True)
class RunSettings:
    api_port: int
    webhook_secret: str
    secret_origin: SecretOrigin
    fynd: FyndSettings
    function_environment: Mapping[str, str] = field(default_factory=dict)
    frappe_webhook_secret: str | None = None
    faults: LocalFaults = field(default_factory=LocalFaults)
    writeback: WritebackTargets = field(default_factory=WritebackTargets)
    erpnext_simulator_port: int | None = None
    """The ERPNext simulator's port when ERPNEXT_SIMULATOR=1 (0: any free one); None: not started."""
    aws_port: int = 0
    """The local AWS endpoint's port: the last run's when kept, else 0 (any free one)."""
    simulator_port: int = 0
    """The Fynd simulator's port, likewise."""

    @property
    def secret_generated(self) -> bool:
        return self.secret_origin is SecretOrigin.GENERATED


def fynd_settings(environ: Mapping[str, str]) -> FyndSettings:
    base_url = environ.get("FYND_BASE_URL") or None
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise SettingsError(f"FYND_BASE_URL must be an http(s) URL, not {base_url!r}")
    return FyndSettings(
        base_url=base_url.rstrip("/") if base_url else None,
        username=environ.get("FYND_USERNAME") or DEFAULT_USERNAME,
        password=environ.get("FYND_PASSWORD") or DEFAULT_PASSWORD,
    )


def writeback_targets(environ: Mapping[str, str]) -> WritebackTargets:
    """ERPNEXT_URL with its key pair, RELAY_CALLBACK_URL with its secret; each pair required
    once its URL is set, so a half-configured write-back stops the command at once."""
    erpnext_url = environ.get("ERPNEXT_URL") or None
    callback_url = environ.get("RELAY_CALLBACK_URL") or None
    for name, url in (("ERPNEXT_URL", erpnext_url), ("RELAY_CALLBACK_URL", callback_url)):
        if url is not None and not url.startswith(("http://", "https://")):
            raise SettingsError(f"{name} must be an http(s) URL, not {url!r}")
    key, secret = environ.get("ERPNEXT_API_KEY") or "", environ.get("ERPNEXT_API_SECRET") or ""
    if erpnext_url and not (key and secret):
        raise SettingsError(
            "ERPNEXT_URL needs ERPNEXT_API_KEY and ERPNEXT_API_SECRET (the relay user's API key pair)"
        )
    callback_secret = environ.get("RELAY_CALLBACK_SECRET") or ""
    if callback_url:
        try:
            check_secret(callback_secret)
        except ValueError as error:
            raise SettingsError(f"RELAY_CALLBACK_SECRET: {error}") from None
    return WritebackTargets(
        erpnext_url=erpnext_url.rstrip("/") if erpnext_url else None,
        erpnext_api_key=key,
        erpnext_api_secret=secret,
        callback_url=callback_url,
        callback_secret=callback_secret,
    )


def run_settings(environ: Mapping[str, str], saved: SavedRun | None = None) -> RunSettings:
    """The run's settings from the environment, and from `saved` (the last run's secret and
    ports, relay_local.saved_run) where the environment says nothing."""
    port_text = environ.get("RELAY_API_PORT") or str(DEFAULT_API_PORT)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SettingsError(f"RELAY_API_PORT must be a port number (0 for any free one), not {port_text!r}")
    secret = environ.get("WEBHOOK_SECRET") or ""
    if secret:
        try:
            check_secret(secret)
        except ValueError as error:
            raise SettingsError(f"WEBHOOK_SECRET: {error}") from None
    frappe_secret = environ.get("FRAPPE_WEBHOOK_SECRET") or None
    if frappe_secret is not None and len(frappe_secret.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(f"FRAPPE_WEBHOOK_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
    erpnext_port = _erpnext_simulator_port(environ)
    if erpnext_port is not None and frappe_secret is None:
        frappe_secret = new_frappe_secret()
    passthrough = {name: environ[name] for name in FUNCTION_PASSTHROUGH if environ.get(name)}
    for name, value in passthrough.items():
        try:
            if float(value) <= 0:
                raise ValueError
        except ValueError:
            raise SettingsError(f"{name} must be a positive number of seconds, not {value!r}") from None
    try:
        faults = LocalFaults.from_environ(environ)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    if secret:
        origin = SecretOrigin.ENVIRONMENT
    elif saved is not None:
        secret, origin = saved.webhook_secret, SecretOrigin.KEPT
    else:
        secret, origin = new_secret(), SecretOrigin.GENERATED
    return RunSettings(
        faults=faults,
        api_port=int(port_text),
        webhook_secret=secret,
        secret_origin=origin,
        aws_port=saved.aws_port if saved else 0,
        simulator_port=saved.simulator_port if saved else 0,
        fynd=fynd_settings(environ),
        function_environment=passthrough,
        frappe_webhook_secret=frappe_secret,
        writeback=writeback_targets(environ),
        erpnext_simulator_port=erpnext_port,
    )


DEFAULT_ERPNEXT_SIMULATOR_PORT = 8000


def _erpnext_simulator_port(environ: Mapping[str, str]) -> int | None:
    wanted = environ.get("ERPNEXT_SIMULATOR") or ""
    if wanted not in ("", "0", "1"):
        raise SettingsError(f"ERPNEXT_SIMULATOR must be 1 (start it) or 0, not {wanted!r}")
    if wanted != "1":
        return None
    port_text = environ.get("ERPNEXT_SIMULATOR_PORT") or str(DEFAULT_ERPNEXT_SIMULATOR_PORT)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SettingsError(f"ERPNEXT_SIMULATOR_PORT must be a port number, not {port_text!r}")
    return int(port_text)


def new_frappe_secret() -> str:
    """A plain secret for the `frappe` preset, as `openssl rand -base64 32` makes one."""
    return base64.b64encode(secrets.token_bytes(32)).decode()
