"""Each function's configuration, read once from its environment and validated.

A missing or malformed variable stops the function at its first invocation with a message
naming the variable, instead of surfacing later as an empty string somewhere deep.
"""

import os
from functools import cache

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator


class SharedSettings(BaseModel):
    """What every function reads: where the ledger and the queue are."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ledger_table_name: str = Field(alias="LEDGER_TABLE_NAME", min_length=1)
    invoice_queue_url: str = Field(alias="INVOICE_QUEUE_URL", min_length=1)
    work_index_shards: int = Field(16, alias="WORK_INDEX_SHARDS", ge=1, le=64)
    """Shards per list of the ledger's work index (relay.adapters.work_index); the same for
    every function, and only ever raised (docs/runbook.md#moving-to-the-work-index)."""


class IngestSettings(SharedSettings):
    webhook_secret_arn: str = Field(alias="WEBHOOK_SECRET_ARN", min_length=1)
    max_body_bytes: int = Field(alias="MAX_BODY_BYTES", gt=0)
    aws_read_timeout_seconds: float | None = Field(None, alias="INGEST_AWS_READ_TIMEOUT_SECONDS", gt=0)
    """Unset in AWS (template.yaml does not set it): ingest's budget in relay.wiring holds there.
    For an emulator slower than AWS (moto on a loaded machine) only; it lengthens each call
    but not the budget the acceptance keeps, so a slow local call answers instead of a 503."""


class DispatchSettings(SharedSettings):
    fynd_base_url: HttpUrl = Field(alias="FYND_BASE_URL")
    fynd_credentials_secret_arn: str = Field(alias="FYND_CREDENTIALS_SECRET_ARN", min_length=1)
    fynd_location_credentials_secret_arn: str | None = Field(
        None, alias="FYND_LOCATION_CREDENTIALS_SECRET_ARN"
    )
    too_early_deadline_seconds: float = Field(alias="TOO_EARLY_DEADLINE_SECONDS", gt=0)
    max_receive_count: int = Field(alias="MAX_RECEIVE_COUNT", ge=2)
    lease_seconds: float = Field(120, alias="LEASE_SECONDS", gt=0)
    retry_base_seconds: float = Field(30, alias="RETRY_BASE_SECONDS", gt=0)
    retry_max_seconds: float = Field(3600, alias="RETRY_MAX_SECONDS", gt=0)
    fynd_connect_timeout_seconds: float = Field(3, alias="FYND_CONNECT_TIMEOUT_SECONDS", gt=0)
    fynd_read_timeout_seconds: float = Field(15, alias="FYND_READ_TIMEOUT_SECONDS", gt=0)
    record_reserve_seconds: float = Field(5, alias="RECORD_RESERVE_SECONDS", gt=0)
    """Kept back from every Fynd call's time budget to record its outcome."""
    fynd_rate_table_name: str | None = Field(None, alias="FYND_RATE_TABLE_NAME", min_length=1)
    """The shared rate limiter's table (relay.adapters.rate); unset, calls go out unpaced."""
    fynd_calls_per_second: float = Field(20, alias="FYND_CALLS_PER_SECOND", gt=0)
    """Update Invoice calls a second per credential, across every dispatcher (template
    FyndCallsPerSecond); Shipment Info reads too when `fynd_reads_per_second` is 0."""
    fynd_reads_per_second: float = Field(20, alias="FYND_READS_PER_SECOND", ge=0)
    """Shipment Info reads a second per credential on a pace of their own (template
    FyndReadsPerSecond); 0: they share the calls' pace."""


class ReconcileSettings(SharedSettings):
    reconcile_after_minutes: float = Field(alias="RECONCILE_AFTER_MINUTES", gt=0)
    max_per_run: int = Field(500, alias="RECONCILE_MAX_PER_RUN", gt=0)
    """Lost entries queued again per run at most, per list (IN_PROGRESS, RETRYING, QUEUED)."""
    max_parked_per_run: int = Field(10_000, alias="RECONCILE_MAX_PARKED_PER_RUN", gt=0)
    """Parked entries that came due queued again per run at most."""

    @property
    def stall_seconds(self) -> float:
        return self.reconcile_after_minutes * 60


class WritebackFeedSettings(BaseModel):
    """WritebackFeedFunction: where the ledger's changes are queued."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    writeback_queue_url: str = Field(alias="WRITEBACK_QUEUE_URL", min_length=1)


class WritebackSettings(SharedSettings):
    """WritebackFunction: the ERP targets (docs/interface.md, "Back to the ERP"). A target whose
    URL is empty (the template's default) is not written to."""

    writeback_queue_url: str = Field(alias="WRITEBACK_QUEUE_URL", min_length=1)
    erpnext_url: HttpUrl | None = Field(None, alias="ERPNEXT_URL")
    erpnext_credentials_secret_arn: str | None = Field(None, alias="ERPNEXT_CREDENTIALS_SECRET_ARN")
    callback_url: HttpUrl | None = Field(None, alias="RELAY_CALLBACK_URL")
    callback_secret_arn: str | None = Field(None, alias="CALLBACK_SECRET_ARN")
    retry_base_seconds: float = Field(30, alias="WRITEBACK_RETRY_BASE_SECONDS", gt=0)
    retry_max_seconds: float = Field(900, alias="WRITEBACK_RETRY_MAX_SECONDS", gt=0)
    connect_timeout_seconds: float = Field(3, alias="WRITEBACK_CONNECT_TIMEOUT_SECONDS", gt=0)
    read_timeout_seconds: float = Field(5, alias="WRITEBACK_READ_TIMEOUT_SECONDS", gt=0)

    @field_validator(
        "erpnext_url", "erpnext_credentials_secret_arn", "callback_url", "callback_secret_arn", mode="before"
    )
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value


class RecoverSettings(SharedSettings):
    """RecoverFunction: the ERPNext site whose failed `Webhook Request Log` rows are taken in
    (docs/integrating.md, "Recovery"). With no ERPNEXT_URL (the template's default) a run
    reads nothing."""

    erpnext_url: HttpUrl | None = Field(None, alias="ERPNEXT_URL")
    erpnext_credentials_secret_arn: str | None = Field(None, alias="ERPNEXT_CREDENTIALS_SECRET_ARN")
    webhook_url: str | None = Field(None, alias="RECOVERY_WEBHOOK_URL")
    """The Request URL the site's Webhooks post to: rows are read for it alone."""
    lookback_hours: float = Field(48, alias="RECOVERY_LOOKBACK_HOURS", ge=13, le=720)
    """How far back a run reads; past 12 h, so a site west of UTC still gets a window
    (relay.domain.recovery.window_start)."""
    read_timeout_seconds: float = Field(20, alias="RECOVERY_READ_TIMEOUT_SECONDS", gt=0)
    reserve_seconds: float = Field(30, alias="RECOVERY_RESERVE_SECONDS", gt=0)
    """No row is started with less of the invocation left: one row's intake and a page read."""

    @field_validator("erpnext_url", "erpnext_credentials_secret_arn", "webhook_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def lookback_seconds(self) -> float:
        return self.lookback_hours * 3600


@cache
def shared_settings() -> SharedSettings:
    return SharedSettings.model_validate(os.environ)


@cache
def ingest_settings() -> IngestSettings:
    return IngestSettings.model_validate(os.environ)


@cache
def dispatch_settings() -> DispatchSettings:
    return DispatchSettings.model_validate(os.environ)


@cache
def reconcile_settings() -> ReconcileSettings:
    return ReconcileSettings.model_validate(os.environ)


@cache
def writeback_feed_settings() -> WritebackFeedSettings:
    return WritebackFeedSettings.model_validate(os.environ)


@cache
def writeback_settings() -> WritebackSettings:
    return WritebackSettings.model_validate(os.environ)


@cache
def recover_settings() -> RecoverSettings:
    return RecoverSettings.model_validate(os.environ)
