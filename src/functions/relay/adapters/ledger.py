"""The invoice ledger on DynamoDB: one item per invoice key, moved only by conditional writes.

Every write states the states it may start from (relay.domain.ledger.sources_of), so two
dispatchers racing for one key cannot both win, and a final entry is never reopened. Every
write that moves an entry also moves it in the work index, in the same UpdateItem
(relay.adapters.work_index); the index's reads are there too.

`statusKey` (the legacy ByStatus index's key) is still written beside the work index's keys:
the online migration of a deployed stack (docs/runbook.md#moving-to-the-work-index) keeps
ByStatus until the backfill is done. Once ByStatus is dropped it is an attribute of a few bytes
that no index reads.

Every public method leaves an outage (throttling past botocore's retries, an unreachable
endpoint, a timeout) as LedgerUnavailableError: the translation happens once, at the class,
so a method added later cannot forget it.
"""

import functools
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from botocore.exceptions import BotoCoreError, ClientError

from relay.adapters.work_index import (
    DEFAULT_WORK_SHARDS,
    DUE_ATTRIBUTE,
    REMOVE_WORK,
    SHARD_ATTRIBUTE,
    WorkIndexReader,
    set_work,
    work_list_of,
)
from relay.domain.errors import AcceptRaceError, LedgerUnavailableError
from relay.domain.intake import Action, Admission
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import (
    ClaimRefusal,
    InvoiceStatus,
    LastError,
    LedgerEntry,
    LedgerEvent,
    WorkList,
    claim_refusal,
    is_parked_wait,
    sources_of,
)
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Invoiced, Rejected, RetryLater, Verdict
from relay.domain.ports import Claim

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

RETENTION_SECONDS = 400 * 86_400
"""Final entries expire (TTL) after about 13 months: longer than any ERP keeps retrying."""

BODY_RETENTION_SECONDS = 35 * 86_400
"""A stored invoice (body item) expires after 35 days: past the queue's and the dead-letter
queue's retention and the default IN403 deadline, the longest an entry stays unfinished."""

TRANSACTION_LIMIT = 100
"""Actions in one DynamoDB TransactWriteItems call."""

type DeadLettered = Literal["DEAD_LETTERED"]
DEAD_LETTERED_KEY: Final[DeadLettered] = "DEAD_LETTERED"
"""The legacy ByStatus partition of entries whose message went to the dead-letter queue."""

BY_STATUS_INDEX = "ByStatus"
"""The legacy index on (statusKey, updatedAt), one partition per status: kept only while a
deployed stack moves to the work index (LegacyByStatusIndex in template.yaml)."""

_BATCH_GET_LIMIT = 100


def _outage_is_typed[**P, R](method: Callable[P, R]) -> Callable[P, R]:
    """DynamoDB errors the method does not handle itself leave as LedgerUnavailableError."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (BotoCoreError, ClientError) as error:
            raise LedgerUnavailableError(f"invoice ledger unavailable ({type(error).__name__})") from error

    return wrapper


def _outages_are_typed[C: type](cls: C) -> C:
    """Apply _outage_is_typed to every public method of the class."""
    for name, member in list(vars(cls).items()):
        if callable(member) and not name.startswith("_"):
            setattr(cls, name, _outage_is_typed(member))
    return cls


@_outages_are_typed
class InvoiceLedger:
    def __init__(
        self,
        table_name: str,
        client: "DynamoDBClient",
        *,
        read_rounds: int | None = None,
        shards: int = DEFAULT_WORK_SHARDS,
    ) -> None:
        """`read_rounds` bounds the BatchGetItem calls `get_many` makes per 100 keys (None: until
        every key is read); keys still unread after them are LedgerUnavailableError. `shards`:
        the work index's shards per list (WORK_INDEX_SHARDS), the same for every writer and reader."""
        self._table = table_name
        self._client = client
        self._read_rounds = read_rounds
        self._shards = shards
        self._index = WorkIndexReader(table_name, client, shards, _entry)

    def get(self, key: InvoiceKey) -> LedgerEntry | None:
        item = self._client.get_item(TableName=self._table, Key=_pk(key), ConsistentRead=True).get("Item")
        return _entry(item) if item else None

    def _update_if(self, **request: Any) -> bool:
        """One conditional UpdateItem on the ledger table: False when its condition refused it."""
        try:
            self._client.update_item(TableName=self._table, **request)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get_many(self, keys: Iterable[InvoiceKey]) -> dict[InvoiceKey, LedgerEntry]:
        wanted = list(dict.fromkeys(keys))
        found: dict[InvoiceKey, LedgerEntry] = {}
        for start in range(0, len(wanted), _BATCH_GET_LIMIT):
            request: Mapping[str, Any] = {
                self._table: {
                    "Keys": [_pk(key) for key in wanted[start : start + _BATCH_GET_LIMIT]],
                    "ConsistentRead": True,
                }
            }
            rounds = 0
            while request:
                if self._read_rounds is not None and rounds == self._read_rounds:
                    raise LedgerUnavailableError("invoice ledger left keys unread (throttled)")
                rounds += 1
                answer = self._client.batch_get_item(RequestItems=request)
                for item in answer["Responses"].get(self._table, []):
                    entry = _entry(item)
                    found[entry.key] = entry
                # DynamoDB may leave keys unread under load; ask again for exactly those.
                request = answer.get("UnprocessedKeys") or {}
                if request and (self._read_rounds is None or rounds < self._read_rounds):
                    time.sleep(0.05)
        return found

    def accept(self, admissions: Sequence[Admission], *, now: float, correlation_id: str | None) -> None:
        """All or nothing. AcceptRaceError when a key changed since it was read (a condition
        failed: read again and decide again); LedgerUnavailableError for anything else that
        cancelled the transaction (throttling, a conflicting transaction): retry later."""
        writes: list[Any] = [
            self._accept_write(admission, now, correlation_id)
            for admission in admissions
            if admission.action in _WRITTEN
        ]
        if not writes:
            return
        # The invoices themselves, for the reconciler, after the state writes: write i stays
        # the state write of the i-th changed admission, which is how a cancelled transaction's
        # reasons are read.
        bodies = [
            self._body_write(admission, now, correlation_id)
            for admission in admissions
            if admission.action in _WRITTEN
        ]
        if len(writes) + len(bodies) <= TRANSACTION_LIMIT:
            writes += bodies
        else:
            self._store_bodies_ahead(bodies)
        try:
            self._client.transact_write_items(TransactItems=writes)
        except ClientError as error:
            if error.response["Error"]["Code"] == "TransactionCanceledException":
                raise _cancellation(error) from error
            raise

    def _body_write(self, admission: Admission, now: float, correlation_id: str | None) -> dict[str, Any]:
        message = QueuedInvoice(
            invoice=admission.invoice,
            content_hash=admission.content_hash,
            accepted_at=now,
            correlation_id=correlation_id,
        )
        return {
            "Update": {
                "TableName": self._table,
                "Key": _body_pk(admission.invoice.key, admission.content_hash),
                "UpdateExpression": "SET #body = :body, contentHash = :hash, expiresAt = :expires",
                "ExpressionAttributeNames": {"#body": "body"},
                "ExpressionAttributeValues": {
                    ":body": _s(message.to_body()),
                    ":hash": _s(admission.content_hash),
                    ":expires": _n(now + BODY_RETENTION_SECONDS),
                },
            }
        }

    def _store_bodies_ahead(self, bodies: Sequence[Any]) -> None:
        """More new invoices than one transaction holds with their bodies (over 50): the bodies
        go first, so no entry ever exists without one. Each body item is named by its content
        hash (_body_pk), so a racer that writes other content for the same key, then loses the
        transaction or is answered 409, writes an item of its own and never the winner's: the
        winner's entry always finds its own body. What a failed transaction leaves expires."""
        for start in range(0, len(bodies), TRANSACTION_LIMIT):
            self._client.transact_write_items(TransactItems=list(bodies[start : start + TRANSACTION_LIMIT]))

    def _accept_write(self, admission: Admission, now: float, correlation_id: str | None) -> dict[str, Any]:
        invoice = admission.invoice
        work, work_values = set_work(WorkList.QUEUED, invoice.key, now, self._shards)
        values: dict[str, AttributeValueTypeDef] = {
            **work_values,
            ":queued": _s(InvoiceStatus.QUEUED),
            ":hash": _s(admission.content_hash),
            ":number": _s(invoice.invoiceNumber),
            ":now": _n(now),
            ":zero": _n(0),
            ":order": _s(invoice.orderId),
            ":type": _s(invoice.invoiceType),
            ":correlation": _s(correlation_id or ""),
        }
        if admission.action is Action.CREATE:
            return {
                "Update": {
                    "TableName": self._table,
                    "Key": _pk(invoice.key),
                    "UpdateExpression": f"{_SET_QUEUED}, {work}",
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": values,
                }
            }
        values[":previous"] = _s(admission.previous_hash or "")
        if admission.action is Action.REPLACE:
            # An enrichment (relay.domain.intake): only while nothing has claimed the recorded
            # version. A claim's condition wants QUEUED with the claimed content, so on this one
            # item exactly one of the two writes wins.
            return {
                "Update": {
                    "TableName": self._table,
                    "Key": _pk(invoice.key),
                    "UpdateExpression": _SET_QUEUED + " REMOVE sendFailedAt, deadLetteredAt, sentAt",
                    "ConditionExpression": "#status = :queued AND contentHash = :previous",
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": values,
                }
            }
        values[":rejected"] = _s(InvoiceStatus.REJECTED)
        return {
            "Update": {
                "TableName": self._table,
                "Key": _pk(invoice.key),
                "UpdateExpression": f"{_SET_QUEUED}, {work}{_FORGET_OUTCOME}",
                "ConditionExpression": "#status = :rejected AND contentHash = :previous",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": values,
            }
        }

    def claim(
        self, message: QueuedInvoice, *, message_id: str, owner: str, now: float, lease_seconds: float
    ) -> Claim:
        """The domain's rule (relay.domain.ledger.claim_refusal) as one conditional write; a
        refused claim returns the entry as it stands, read by the same request.

        botocore retries a request whose answer timed out (read_timeout), and the first attempt
        may have been applied: the retry then finds the entry already claimed and would refuse
        it, leaving the invoice IN_PROGRESS under this worker's lease with no one working on it
        until the lease ends (seen under load). Each call writes a token of its own
        (`claimToken`); a refusal that finds it is this call's own claim, granted."""
        key = message.invoice.key
        token = uuid.uuid4().hex
        work, work_values = set_work(WorkList.IN_PROGRESS, key, now + lease_seconds, self._shards)
        values: dict[str, AttributeValueTypeDef] = {
            **work_values,
            ":hash": _s(message.content_hash),
            ":in_progress": _s(InvoiceStatus.IN_PROGRESS),
            ":queued": _s(InvoiceStatus.QUEUED),
            ":retrying": _s(InvoiceStatus.RETRYING),
            ":owner": _s(owner),
            ":message": _s(message_id),
            ":until": _n(now + lease_seconds),
            ":now": _n(now),
            ":one": _n(1),
            ":zero": _n(0),
            ":number": _s(message.invoice.invoiceNumber),
            ":accepted": _n(message.accepted_at),
            ":order": _s(message.invoice.orderId),
            ":type": _s(message.invoice.invoiceType),
            ":token": _s(token),
        }
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=_pk(key),
                UpdateExpression=(
                    "SET #status = :in_progress, statusKey = :in_progress, leaseOwner = :owner,"
                    " leaseUntil = :until, claimMessageId = :message, claimToken = :token, updatedAt = :now,"
                    " claimedFrom = if_not_exists(#status, :queued),"
                    " attempts = if_not_exists(attempts, :zero) + :one, contentHash = :hash,"
                    " invoiceNumber = if_not_exists(invoiceNumber, :number),"
                    " acceptedAt = if_not_exists(acceptedAt, :accepted),"
                    f" orderId = :order, invoiceType = :type, {work} REMOVE deadLetteredAt, sendFailedAt"
                ),
                ConditionExpression=_CLAIMABLE,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # ReturnValuesOnConditionCheckFailure puts the entry in the error: no second read.
            item = cast("Mapping[str, Any] | None", error.response.get("Item"))
            if item and item.get("claimToken", {}).get("S") == token:
                return Claim(_entry(item))  # an earlier attempt of this very request took it
            entry = _entry(item) if item else self.get(key)
            return Claim(entry, claim_refusal(entry, message.content_hash, now) or ClaimRefusal.BUSY)
        return Claim(_entry(answer["Attributes"]))

    def record(
        self, key: InvoiceKey, verdict: Verdict, *, owner: str, now: float, ack_id: str | None
    ) -> bool:
        # A verdict is recorded only on an entry this owner still holds: the one state it may
        # move from (relay.domain.ledger) and a lease in our name.
        (held,) = sources_of(verdict.status)
        values: dict[str, AttributeValueTypeDef] = {":owner": _s(owner), ":now": _n(now), ":held": _s(held)}
        match verdict:
            case Invoiced(already=already, confirmed_by=confirmed_by):
                values |= {
                    ":status": _s(InvoiceStatus.INVOICED),
                    ":expires": _n(now + RETENTION_SECONDS),
                }
                values |= {
                    ":already": {"BOOL": already},
                    ":ack": _s(ack_id or ""),
                    ":confirmed": _s(confirmed_by),
                }
                update = "SET #status = :status, expiresAt = :expires, alreadyInvoiced = :already, fyndAckId = :ack"
                update += ", confirmedBy = :confirmed"
                update += ", updatedAt = :now REMOVE leaseOwner, leaseUntil, lastErrorCode, lastErrorMessage, retryAt"
                update += f", statusKey, deadLetteredAt, lastErrorNothingSent, {REMOVE_WORK}"
            case Rejected(code=code, message=message):
                values |= {
                    ":status": _s(InvoiceStatus.REJECTED),
                    ":expires": _n(now + RETENTION_SECONDS),
                }
                values |= {":code": _s(code), ":message": _s(message or code)}
                work, work_values = set_work(WorkList.REJECTED, key, now, self._shards)
                values |= work_values
                update = f"SET #status = :status, statusKey = :status, expiresAt = :expires, {work}"
                update += ", lastErrorCode = :code, lastErrorMessage = :message"
                update += ", updatedAt = :now REMOVE leaseOwner, leaseUntil, retryAt, deadLetteredAt"
                update += ", lastErrorNothingSent"
            case RetryLater(reason=reason, message=message, delay_seconds=delay, nothing_sent=nothing_sent):
                values |= {":status": _s(InvoiceStatus.RETRYING), ":retry_at": _n(now + delay)}
                values |= {":code": _s(reason), ":message": _s(message or reason)}
                values |= {":nothing_sent": {"BOOL": nothing_sent}}
                # A long wait is parked: the dispatcher acknowledges the message and the
                # reconciler queues the invoice again at retryAt (relay.domain.ledger).
                listed = WorkList.PARKED if is_parked_wait(delay, reason) else WorkList.RETRYING
                work, work_values = set_work(listed, key, now + delay, self._shards)
                values |= work_values
                update = f"SET #status = :status, statusKey = :status, retryAt = :retry_at, {work}"
                update += ", lastErrorCode = :code, lastErrorMessage = :message"
                update += ", lastErrorNothingSent = :nothing_sent"
                update += ", updatedAt = :now REMOVE leaseOwner, leaseUntil, deadLetteredAt"
        return self._update_if(
            Key=_pk(key),
            UpdateExpression=update,
            ConditionExpression="#status = :held AND leaseOwner = :owner",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )

    # ---- The work index (relay.adapters.work_index): the reconciler's view and `relay list` ----

    def due(
        self, work: WorkList, *, due_by: float, limit: int, out_of_time: Callable[[], bool]
    ) -> tuple[list[LedgerEntry], bool]:
        """See relay.domain.reconcile.WorkLedger.due: one range Query per shard, in parallel,
        each checking `out_of_time` before every page. The index is eventually consistent,
        which the conditional mark makes harmless."""
        return self._index.due(work, due_by=due_by, limit=limit, out_of_time=out_of_time)

    def listed(
        self,
        work: WorkList,
        *,
        since: float | None = None,
        until: float | None = None,
        error_code: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[LedgerEntry]:
        """Entries of `work` due in [since, until], merged over the shards (relay_cli's lists).
        A list, not a generator: the pages are read inside the call, where an outage becomes
        LedgerUnavailableError."""
        return self._index.listed(
            work, since=since, until=until, error_code=error_code, newest_first=newest_first, limit=limit
        )

    def mark_reconciled(self, entry: LedgerEntry, *, now: float) -> bool:
        """Stamp `entry` as queued again at `now`, only if nothing wrote it since it was read: its
        updatedAt and dueAt move to now, so it is due again only after a whole stall window; a
        parked entry moves to the RETRYING list (its message is on its way now)."""
        listed = WorkList.RETRYING if entry.parked else _work_list(entry)
        work, values = set_work(listed, entry.key, now, self._shards)
        return self._update_if(
            Key=_pk(entry.key),
            UpdateExpression=(
                "SET updatedAt = :now, reconciledAt = :now, reconciles = if_not_exists(reconciles, :zero) + :one, "
                + work
            ),
            ConditionExpression="#status = :status AND updatedAt = :seen AND contentHash = :hash",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                **values,
                ":now": _n(now),
                ":zero": _n(0),
                ":one": _n(1),
                ":status": _s(entry.status),
                ":seen": _n(entry.updated_at),
                ":hash": _s(entry.content_hash),
            },
        )

    def mark_send_failed(self, key: InvoiceKey, *, now: float) -> bool:
        """See relay.domain.ports.Ledger. Not progress: updatedAt, and so the reconciler's
        window, stay as they were."""
        return self._update_if(
            Key=_pk(key),
            UpdateExpression="SET sendFailedAt = :now",
            ConditionExpression="#status = :queued",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":now": _n(now), ":queued": _s(InvoiceStatus.QUEUED)},
        )

    def stamp_sent(self, message: QueuedInvoice, *, now: float, until: float) -> bool:
        """See relay.domain.ports.Ledger. One UpdateItem: `sentAt` and `dueAt` only, so the entry
        stays in its list (the index's sort key moves: a delete and a put in the same shard). The
        condition `dueAt <= :now` is what makes it once per cover: an earlier stamp left dueAt
        ahead. A refused stamp still costs DynamoDB a write unit on the table, none on the index."""
        return self._update_if(
            Key=_pk(message.invoice.key),
            UpdateExpression=f"SET sentAt = :now, {DUE_ATTRIBUTE} = :until",
            ConditionExpression=(
                f"#status IN (:queued, :retrying, :in_progress) AND contentHash = :hash AND {DUE_ATTRIBUTE} <= :now"
                f" AND attribute_not_exists(deadLetteredAt) AND NOT begins_with({SHARD_ATTRIBUTE}, :parked)"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":now": _n(now),
                ":until": _n(until),
                ":queued": _s(InvoiceStatus.QUEUED),
                ":retrying": _s(InvoiceStatus.RETRYING),
                ":in_progress": _s(InvoiceStatus.IN_PROGRESS),
                ":hash": _s(message.content_hash),
                ":parked": _s(f"{WorkList.PARKED}#"),
            },
        )

    def mark_dead_lettered(self, message: QueuedInvoice, *, message_id: str, now: float) -> bool:
        """Move the entry to the DEAD_LETTERED work list, while its status stays what it was; the
        reconciler reads that list only for marks older than the dead-letter queue's retention
        (relay.domain.reconcile). See relay.domain.ports.Ledger."""
        work, values = set_work(WorkList.DEAD_LETTERED, message.invoice.key, now, self._shards)
        return self._update_if(
            Key=_pk(message.invoice.key),
            UpdateExpression=f"SET statusKey = :dead, deadLetteredAt = :now, updatedAt = :now, {work}",
            ConditionExpression=(
                "#status IN (:queued, :retrying, :in_progress) AND contentHash = :hash"
                " AND (attribute_not_exists(claimMessageId) OR claimMessageId = :message)"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                **values,
                ":dead": _s(DEAD_LETTERED_KEY),
                ":now": _n(now),
                ":queued": _s(InvoiceStatus.QUEUED),
                ":retrying": _s(InvoiceStatus.RETRYING),
                ":in_progress": _s(InvoiceStatus.IN_PROGRESS),
                ":hash": _s(message.content_hash),
                ":message": _s(message_id),
            },
        )

    def body(self, key: InvoiceKey) -> QueuedInvoice | None:
        """The message ingest queued for the content `key`'s entry now holds, as accept stored it;
        None when there is no entry or no body of that content."""
        entry = self._client.get_item(
            TableName=self._table, Key=_pk(key), ProjectionExpression="contentHash", ConsistentRead=True
        ).get("Item")
        if not entry:
            return None
        content_hash = str(entry["contentHash"]["S"])
        for item_key in (_body_pk(key, content_hash), _legacy_body_pk(key)):
            item = self._client.get_item(TableName=self._table, Key=item_key, ConsistentRead=True).get("Item")
            text = item.get("body", {}).get("S") if item else None
            if not text:
                continue
            try:
                message = QueuedInvoice.from_body(str(text))
            except ValueError:  # pydantic's ValidationError: a body an older or newer format wrote
                return None
            return message if message.content_hash == content_hash else None
        return None

    # ---- The operator's replay (relay replay, src/tools/relay_cli) ----

    @_outage_is_typed
    def replay(self, entry: LedgerEntry, *, by: str, reason: str, now: float) -> LedgerEntry | None:
        """Queue a REJECTED entry again, unchanged, and add who/when/why to its history.

        Only from the states relay.domain.ledger allows into QUEUED (REJECTED), and only if the
        entry is still exactly the one the operator looked at (same content, same last update):
        an ERP's corrected resubmission in between wins, and None says so. The entry starts
        over (attempts 0, a fresh IN403 deadline from `now` through the replay event, see
        LedgerEntry.waiting_since) but keeps `acceptedAt`, the first acceptance. The caller
        puts the invoice back on the queue after this write, never before, so the dispatcher
        cannot find the entry still final and drop the message.
        """
        sources = sorted(sources_of(InvoiceStatus.QUEUED))
        work, work_values = set_work(WorkList.QUEUED, entry.key, now, self._shards)
        event: dict[str, AttributeValueTypeDef] = {
            "action": _s("replay"),
            "at": _n(now),
            "by": _s(by),
            "reason": _s(reason),
        }
        if entry.last_error:
            event |= {"code": _s(entry.last_error.code), "message": _s(entry.last_error.message)}
        values: dict[str, AttributeValueTypeDef] = {
            **work_values,
            ":queued": _s(InvoiceStatus.QUEUED),
            ":now": _n(now),
            ":zero": _n(0),
            ":hash": _s(entry.content_hash),
            ":seen": _n(entry.updated_at),
            ":event": {"L": [{"M": event}]},
            ":none": {"L": []},
            **{f":source{index}": _s(status) for index, status in enumerate(sources)},
        }
        source_list = ", ".join(f":source{index}" for index in range(len(sources)))
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=_pk(entry.key),
                UpdateExpression=(
                    "SET #status = :queued, statusKey = :queued, updatedAt = :now,"
                    " attempts = :zero, history = list_append(if_not_exists(history, :none), :event), "
                    + work
                    + _FORGET_OUTCOME
                ),
                ConditionExpression=f"#status IN ({source_list}) AND contentHash = :hash AND updatedAt = :seen",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return _entry(answer["Attributes"])


def _cancellation(error: ClientError) -> Exception:
    """Why DynamoDB cancelled a transaction, from its CancellationReasons (one per item, in order)."""
    reasons = error.response.get("CancellationReasons") or []
    codes = {str(reason.get("Code") or "None") for reason in reasons if isinstance(reason, dict)}
    if "ConditionalCheckFailed" in codes:
        # A key changed since it was read: deciding again from a fresh read settles it.
        return AcceptRaceError("an invoice key changed while this request was being accepted")
    # ThrottlingError, TransactionConflict, ProvisionedThroughputExceeded, or no reason given:
    # nothing was decided about the keys, and the same request can succeed later.
    named = ", ".join(sorted(codes - {"None"})) or "no reason given"
    return LedgerUnavailableError(f"invoice ledger cancelled the write ({named})")


_WRITTEN = (Action.CREATE, Action.RESUBMIT, Action.REPLACE)
"""The admissions that write an entry (and its body); the others only answer or queue again."""

_CLAIMABLE = (
    # relay.domain.ledger.claim_refusal, as DynamoDB states it: a missing entry, or the same
    # content QUEUED, RETRYING once its retryAt has come, or IN_PROGRESS under a dead lease.
    # A lease "until T" has ended at T (LedgerEntry.lease_is_live), as a retryAt of T is due at
    # T: DynamoDB compares the two numbers exactly, both written to the millisecond (_n), so a
    # claim in the lease's last millisecond is a real case, and `<=` is the domain's answer.
    "attribute_not_exists(pk) OR (contentHash = :hash AND (#status = :queued"
    " OR (#status = :retrying AND (attribute_not_exists(retryAt) OR retryAt <= :now))"
    " OR (#status = :in_progress AND leaseUntil <= :now)))"
)
_SET_QUEUED = (
    "SET #status = :queued, statusKey = :queued, contentHash = :hash, invoiceNumber = :number, acceptedAt = :now, updatedAt = :now,"
    " attempts = :zero, orderId = :order, invoiceType = :type, correlationId = :correlation"
)
_FORGET_OUTCOME = (
    # Everything an entry holds that a new one would not (only `history` stays, the operators'
    # audit trail): its outcome, and its last claim. A claimMessageId left behind would name
    # the message of the content before, so the new message's dead-letter mark (which wants
    # no claim or its own) would be refused and the reconciler would queue again an invoice
    # that waits in the dead-letter queue.
    " REMOVE lastErrorCode, lastErrorMessage, expiresAt, retryAt, alreadyInvoiced, fyndAckId, confirmedBy,"
    " claimMessageId, claimedFrom, leaseOwner, leaseUntil, deadLetteredAt, sendFailedAt, reconciledAt, reconciles,"
    " claimToken, sentAt"
)


def _pk(key: InvoiceKey) -> dict[str, "AttributeValueTypeDef"]:
    return {"pk": _s(str(key))}


def _body_pk(key: InvoiceKey, content_hash: str) -> dict[str, "AttributeValueTypeDef"]:
    """The item beside the entry holding one content of the invoice as queued (the entry stays
    small). Named by the content hash, so two writers of different content for one key never
    write the same item (_store_bodies_ahead)."""
    return {"pk": _s(f"body#{key}#{content_hash}")}


def _legacy_body_pk(key: InvoiceKey) -> dict[str, "AttributeValueTypeDef"]:
    """Where bodies were stored before they were named by content: read, never written. Such an
    item expires BODY_RETENTION_SECONDS after its write; drop this fallback once all have."""
    return {"pk": _s(f"body#{key}")}


def _s(value: str) -> "AttributeValueTypeDef":
    return {"S": str(value)}


def _n(value: float) -> "AttributeValueTypeDef":
    return {"N": repr(round(value, 3)) if isinstance(value, float) else str(value)}


def _flag(item: Mapping[str, Any], name: str) -> bool:
    return bool(item.get(name, {}).get("BOOL", False))


def _entry(item: Mapping[str, Any]) -> LedgerEntry:
    def text(name: str) -> str | None:
        value = item.get(name, {}).get("S")
        return str(value) if value else None

    def number(name: str) -> float | None:
        value = item.get(name, {}).get("N")
        return float(value) if value is not None else None

    code, message = text("lastErrorCode"), text("lastErrorMessage")
    return LedgerEntry(
        key=InvoiceKey.parse(item["pk"]["S"]),
        status=InvoiceStatus(item["status"]["S"]),
        content_hash=item["contentHash"]["S"],
        invoice_number=text("invoiceNumber") or "",
        attempts=int(number("attempts") or 0),
        accepted_at=number("acceptedAt") or 0.0,
        updated_at=number("updatedAt") or 0.0,
        lease_owner=text("leaseOwner"),
        lease_until=number("leaseUntil"),
        last_error=LastError(code, message or "", _flag(item, "lastErrorNothingSent")) if code else None,
        correlation_id=text("correlationId"),
        fynd_ack_id=text("fyndAckId"),
        history=_history(item),
        retry_at=number("retryAt"),
        already_invoiced=bool(item.get("alreadyInvoiced", {}).get("BOOL", False)),
        claim_message_id=text("claimMessageId"),
        claimed_from=InvoiceStatus(claimed_from) if (claimed_from := text("claimedFrom")) else None,
        confirmed_by=text("confirmedBy"),
        dead_lettered_at=number("deadLetteredAt"),
        send_failed_at=number("sendFailedAt"),
        due_at=number("dueAt"),
        parked=work_list_of(item) is WorkList.PARKED,
        sent_at=number("sentAt"),
    )


def _work_list(entry: LedgerEntry) -> WorkList:
    """The list an unfinished entry is in by its status (a parked one aside)."""
    if entry.dead_lettered_at is not None:
        return WorkList.DEAD_LETTERED
    return WorkList(str(entry.status))


def _history(item: Mapping[str, Any]) -> tuple[LedgerEvent, ...]:
    """The entry's operator actions, oldest first (written by InvoiceLedger.replay)."""
    events = []
    for element in item.get("history", {}).get("L", []):
        event = {name: next(iter(value.values())) for name, value in element.get("M", {}).items()}
        code = event.get("code")
        events.append(
            LedgerEvent(
                action=str(event.get("action", "")),
                at=float(event.get("at", 0)),
                by=str(event.get("by", "")),
                reason=str(event.get("reason", "")),
                previous_error=LastError(str(code), str(event.get("message", ""))) if code else None,
            )
        )
    return tuple(events)
