"""`make fuzz`: hostile requests, signed and unsigned, against the real ingest API in-process.

Every request is an API Gateway (HTTP API 2.0) event built by `relay_local.events.http_event`
and resolved by `relay.api.app`, over in-memory fakes of the ledger and the queue
(`ingest_harness`). A seeded generator mixes clean invoices (a small pool of order ids, so
duplicates, conflicts and resubmissions happen) with every kind of hostility we know of:
broken and non-standard JSON, deep nesting, lone surrogates, ids outside the documented set,
wrong types, oversize bodies and invoices, bad content types and base64, missing, stale,
foreign and malformed signatures, and status GETs with odd paths, queries and signatures.

What must hold, checked after every request:
- no answer is a 5xx, and no exception escapes the API;
- a refusal (any non-2xx) changed nothing: no ledger entry, no message;
- a clean, correctly signed POST is answered 202 or 409, nothing else;
- every invoice answered 202 has a ledger entry and, while QUEUED, a message that reads back.
Then, every DRAIN_EVERY requests and at the end, what was queued is drained through the real
dispatcher over the port fakes (`fuzz_world.World.drain`): every invoice answered 202 must end
INVOICED or REJECTED (none dead-lettered), and none may reach Fynd twice.

    python tests/ingest_fuzz.py [--requests N] [--seed S]
"""

import argparse
import contextlib
import json
import os
import random
import string
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "src" / "functions", ROOT / "src" / "tools", ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import conftest  # noqa: E402, F401  - the functions' static environment, as in the tests
from fuzz_world import ORDER_POOL, World  # noqa: E402
from ingest_harness import Answer, Ingest, ingest_in_process  # noqa: E402
from relay.domain.invoice import InvoiceKey, InvoiceType  # noqa: E402
from relay.domain.standard_webhooks import request_line  # noqa: E402
from relay.observability import logger, metrics  # noqa: E402
from relay_local.signing import new_secret, signed_headers  # noqa: E402

MAX_BODY_BYTES = 262_144
DRAIN_EVERY = 200
HOT_ORDERS = 300


@dataclass
class Tally:
    seed: int
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    signatures: Counter[str] = field(default_factory=Counter)
    accepted: set[InvoiceKey] = field(default_factory=set)
    known: list[InvoiceKey] = field(default_factory=list)
    """The accepted keys in the order they were first answered 202 (what a status GET asks for)."""
    final: Counter[str] = field(default_factory=Counter)
    fynd_calls: int = 0
    sent_twice: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, kind: str, detail: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(f"[{kind}] {detail}")

    def summary(self) -> str:
        server_errors = sum(n for status, n in self.statuses.items() if status >= 500)
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        finals = ", ".join(f"{status}: {n}" for status, n in sorted(self.final.items()))
        return (
            f"ingest fuzz: seed {self.seed}, {self.requests} requests in {self.seconds:.1f} s\n"
            f"  answers: {statuses}\n"
            f"  5xx: {server_errors}\n"
            f"  invoices answered 202: {len(self.accepted)} keys; after draining: {finals or 'none'}\n"
            f"  dispatched: {self.fynd_calls} Fynd calls; keys applied twice: {self.sent_twice}\n"
            f"  bodies: {', '.join(f'{k} {n}' for k, n in self.bodies.most_common())}\n"
            f"  signatures: {', '.join(f'{k} {n}' for k, n in self.signatures.most_common())}\n"
            f"  broken promises: {len(self.failures)}"
            + "".join(f"\n    {failure}" for failure in self.failures)
        )


# ---- what clients send ----


def text(rng: random.Random, size: int = 12) -> str:
    alphabets = [
        string.ascii_letters + string.digits,
        "éüßçñ漢字表🙂👍🏽\u0301\u200d\u00a0 ",
        string.printable,
    ]
    alphabet = rng.choice(alphabets)
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, size + 1)))


def value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.45:
        return rng.choice(
            [
                lambda: text(rng),
                lambda: rng.randrange(-(2**70), 2**70),
                lambda: rng.randrange(-1000, 1000),
                lambda: rng.uniform(-1e6, 1e6),
                lambda: rng.choice([True, False, None, 0, -0.0, 1e-300, 1.7e308, ""]),
            ]
        )()
    if roll < 0.75:
        return {text(rng, 8): value(rng, depth - 1) for _ in range(rng.randrange(0, 4))}
    return [value(rng, depth - 1) for _ in range(rng.randrange(0, 4))]


def order_id(rng: random.Random) -> str:
    """Mostly a hot key (resends, duplicates, conflicts, resubmissions), else one of many more."""
    if rng.random() < 0.7:
        return f"FZ-{rng.randrange(HOT_ORDERS)}"
    return f"FZ-{rng.randrange(HOT_ORDERS, ORDER_POOL)}"


def clean_invoice(rng: random.Random) -> dict[str, Any]:
    """A valid invoice for a key of the pool. Its content is the key's own nine times in ten
    (a resend is a duplicate), a variant otherwise (a conflict, or a correction once rejected)."""
    oid, invoice_type = order_id(rng), rng.choice(["sale", "sale", "return"])
    variant = 0 if rng.random() < 0.9 else rng.randrange(1, 3)
    keyed = random.Random(f"{oid}/{invoice_type}/{variant}")
    document: dict[str, Any] = {
        "orderId": oid,
        "invoiceNumber": f"INV-{oid}-{variant}",
        "invoiceType": invoice_type,
    }
    for name in ("irnNumber", "ackNumber", "ackDate", "invoiceQrCode", "signedInvoice"):
        if keyed.random() < 0.2:
            document[name] = f"{name}-{variant}"
    if keyed.random() < 0.3:
        document["orderItems"] = [
            {"orderItemId": f"{oid}-{n}", "quantity": keyed.randrange(1, 4)}
            for n in range(keyed.randrange(1, 3))
        ]
    if keyed.random() < 0.1:
        document["packages"] = [
            {"awb": f"AWB-{oid}", "dims": {"l": 10, "w": 5.5, "unit": "cm"}, "n": [1, 2.5, None]}
        ]
    if keyed.random() < 0.1:
        document["locationCode"] = keyed.choice(["BLR-1", "DEL_2", "mum.3"])
    return document


HOSTILE_IDS = [
    "", " ", "a/b", "FY é", "FYé", unicodedata.normalize("NFD", "FYé"), "a%2Fb", "a?b", "a#b", "a+b",
    "\u0000", "A" * 129, "-lead", ".dot", "tab\t", "new\nline", "🙂", "\uff46\uff55\uff4c\uff4c", "\ud83d",
]  # fmt: skip


def hostile_invoice(rng: random.Random) -> tuple[str, dict[str, Any] | str]:
    """A mutated invoice: the kind of mutation, and the invoice (or raw JSON text)."""
    document = clean_invoice(rng)
    kind = rng.choice(
        [
            "wrong_type",
            "missing_field",
            "unknown_field",
            "bad_order_id",
            "bad_location",
            "deep_packages",
            "surrogate",
            "nonstandard_number",
            "huge_text",
            "bad_items",
            "random_packages",
            "null_field",
        ]
    )
    if kind == "wrong_type":
        name = rng.choice(list(document))
        document[name] = value(rng, 2)
    elif kind == "missing_field":
        del document[rng.choice(["orderId", "invoiceNumber", "invoiceType"])]
    elif kind == "unknown_field":
        document[rng.choice(["invoiceNo", "orderID", text(rng, 6)])] = value(rng, 1)
    elif kind == "bad_order_id":
        document["orderId"] = rng.choice(HOSTILE_IDS)
    elif kind == "bad_location":
        document["locationCode"] = rng.choice(HOSTILE_IDS)
    elif kind == "deep_packages":
        depth = rng.choice([14, 15, 16, 17, 198, 230, 255, 256, 300, 999, 5000])
        raw = json.dumps({k: v for k, v in document.items() if k != "packages"})
        return kind, raw[:-1] + ', "packages": [{"d": ' + "[" * depth + "]" * depth + "}]}"
    elif kind == "surrogate":
        escape = rng.choice(["\\ud83d", "\\udc00", "\\ud800\\ud800", "a\\udfffb"])
        where = rng.choice(["packages", "key", "invoiceNumber", "ackDate"])
        raw = json.dumps(document)[:-1]
        if where == "packages":
            return kind, raw + f', "packages": [{{"note": "{escape}"}}]}}'
        if where == "key":
            return kind, raw + f', "packages": [{{"{escape}": 1}}]}}'
        return kind, raw + f', "{where}2": "{escape}"}}'.replace(f'"{where}2"', f'"{where}"')
    elif kind == "nonstandard_number":
        literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" * 5000])
        return kind, json.dumps(document)[:-1] + f', "packages": [{{"w": {literal}}}]}}'
    elif kind == "huge_text":
        document[rng.choice(["signedInvoice", "invoiceQrCode", "invoiceNumber"])] = "x" * rng.choice(
            [257, 100_000, 262_000]
        )
    elif kind == "bad_items":
        document["orderItems"] = rng.choice(
            [
                [],
                [{"orderItemId": "x", "quantity": 0}],
                [{"quantity": 1}],
                "items",
                [None],
                [{"orderItemId": "", "quantity": True}],
            ]
        )
    elif kind == "random_packages":
        document["packages"] = [value(rng, rng.randrange(1, 8)) for _ in range(rng.randrange(1, 3))]
    elif kind == "null_field":
        document[rng.choice(list(document))] = None
    return kind, document


def body_text(rng: random.Random) -> tuple[str, str | bytes, bool]:
    """(kind, body, clean): a webhook body, and whether it is a clean batch of valid invoices."""
    roll = rng.random()
    if roll < 0.40:
        invoices = [clean_invoice(rng) for _ in range(rng.choice([1, 1, 1, 2, 5, 20, 100]))]
        if len({(i["orderId"], i["invoiceType"]) for i in invoices}) < len(invoices):
            invoices = list({(i["orderId"], i["invoiceType"]): i for i in invoices}.values())
        payload: Any = invoices[0] if len(invoices) == 1 and rng.random() < 0.5 else invoices
        separators = rng.choice([(",", ":"), (", ", ": ")])
        return "clean", json.dumps(payload, separators=separators, indent=rng.choice([None, 2])), True
    if roll < 0.70:
        kind, document = hostile_invoice(rng)
        if isinstance(document, str):
            return kind, document, False
        payload = document if rng.random() < 0.5 else [clean_invoice(rng), document]
        return kind, json.dumps(payload), False
    if roll < 0.80:
        return "raw_mutation", mutate_bytes(rng, json.dumps([clean_invoice(rng)]).encode()), False
    options: list[tuple[str, Callable[[], str | bytes]]] = [
        ("top_level_nesting", lambda: "[" * rng.choice([300, 5000, 20_000, 100_000]) + "]" * 10),
        ("deep_object", lambda: '{"a":' * rng.choice([500, 20_000]) + "1" + "}" * 10),
        ("scalar", lambda: rng.choice(["1", '"text"', "null", "true", "[]", "{}", "", " "])),
        ("too_many", lambda: json.dumps([clean_invoice(rng) for _ in range(101)])),
        ("empty_items", lambda: json.dumps([{}, [], None, 1])),
        ("duplicate_keys", lambda: '{"orderId":"FZ-1","orderId":"FZ-2","invoiceNumber":"1","invoiceType":"sale"}'),
        ("same_key_twice", lambda: json.dumps([{**clean_invoice(rng), "orderId": "FZ-7", "invoiceType": "sale", "invoiceNumber": n} for n in ("A", "B")])),
        ("not_utf8", lambda: b'{"orderId": "\xff\xfe", "invoiceNumber": "1", "invoiceType": "sale"}'),
        ("bom", lambda: "\ufeff" + json.dumps(clean_invoice(rng))),
        ("oversize", lambda: json.dumps({"x": "y" * (MAX_BODY_BYTES + rng.randrange(1, 1000))})),
        ("control_chars", lambda: '{"orderId": "FZ-\u0001", "invoiceNumber": "1\u0000", "invoiceType": "sale"}'),
    ]  # fmt: skip
    kind, make = rng.choice(options)
    return kind, make(), False


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(4)
        position = rng.randrange(len(data) + 1)
        if action == 0 and data:
            del data[position : position + rng.randrange(1, 8)]
        elif action == 1:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif action == 2 and data:
            data[min(position, len(data) - 1)] ^= 1 << rng.randrange(8)
        else:
            data = data[:position]
    return bytes(data)


def hostile_signature(rng: random.Random, ingest: Ingest, body: str | bytes) -> tuple[str, dict[str, Any]]:
    """A way of (not) signing the POST: its kind and the keyword arguments for Ingest.post."""
    now = time.time()
    roll = rng.random()
    if roll < 0.70:
        return "signed", {}
    text = body if isinstance(body, str) else body.decode("latin-1")
    good = signed_headers(ingest.secret, text, at=now)
    options: list[tuple[str, dict[str, Any]]] = [
        ("unsigned", {"signed": False}),
        ("foreign_secret", {"secret": new_secret()}),
        ("stale", {"at": now - rng.choice([301, 3600, 10**9])}),
        ("future", {"at": now + rng.choice([301, 10**6])}),
        ("timestamp_garbage", {"headers": {"webhook-timestamp": rng.choice(["abc", "1e3", "-5", "", " 1", "nan", "inf", "9" * 40, str(now)])}}),
        ("signature_garbage", {"headers": {"webhook-signature": rng.choice(["v1", "v1,", "garbage", "v2,abc", "v1,@@", "v1,a,b", " ", "v1," + "A" * 5000])}}),
        ("garbage_then_valid", {"headers": {"webhook-signature": f"{rng.choice(['v1', 'x,y,z', 'v1,!!'])} {good['webhook-signature']}", "webhook-id": good["webhook-id"], "webhook-timestamp": good["webhook-timestamp"]}}),
        ("other_id", {"headers": {"webhook-id": "msg_other"}}),
        ("huge_id", {"headers": {"webhook-id": "m" * 20_000}}),
        ("unicode_id", {"headers": {"webhook-id": "msg_🙂\ud83d"}}),
        ("content_type", {"content_type": rng.choice([None, "text/plain", "APPLICATION/JSON", "application/json; charset=latin-1", "application/vnd.erp+json", "multipart/form-data", "application/jsonx"])}),
    ]  # fmt: skip
    return rng.choice(options)


def status_request(rng: random.Random, ingest: Ingest, known: list[InvoiceKey]) -> tuple[str, Answer]:
    if known and rng.random() < 0.5:
        key = rng.choice(known)
        segment, query = key.order_id, rng.choice(["", f"invoiceType={key.invoice_type}"])
    else:
        segment = rng.choice(
            [
                "FZ-1",
                "FZ%2D1",
                "%",
                "%zz",
                "%FF",
                "..",
                "FZ%2F1",
                "FZ%C3%A9",
                "é",
                "A" * 300,
                "%00",
                "FZ-1;x",
                "FZ-1%20",
            ]
        )
        query = rng.choice(
            ["", "invoiceType=sale", "invoiceType=return", "invoiceType=refund", "invoiceType=sale&invoiceType=return",
             "invoiceType", "x=1", "invoiceType=%73ale", "invoiceType=sale%00", "&&&", "=", "invoiceType=" + "s" * 1000]
        )  # fmt: skip
    roll = rng.random()
    if roll < 0.6:
        return "get_signed", ingest.get(segment, query)
    if roll < 0.7:
        return "get_unsigned", ingest.get(segment, query, signed=False)
    if roll < 0.8:
        return "get_empty_body_signature", ingest.get(segment, query, signed_content="")
    if roll < 0.9:
        other = request_line("GET", "/v1/invoices/FZ-0", "invoiceType=sale")
        return "get_replayed", ingest.get(segment, query, signed_content=other)
    return "get_stale", ingest.get(segment, query, at=time.time() - 400)


# ---- the run ----


def run(requests: int, seed: int, *, drain_every: int = DRAIN_EVERY) -> Tally:
    """Send `requests` requests; the tally says what happened and which promise broke, if any."""
    rng = random.Random(seed)
    tally = Tally(seed)
    world = World(seed)
    started = time.perf_counter()
    with (
        quiet(),
        ingest_in_process(
            world.ledger, world.queue, max_body_bytes=MAX_BODY_BYTES, clock=world.clock
        ) as ingest,
    ):
        for number in range(1, requests + 1):
            one_request(rng, ingest, world, tally)
            if number % drain_every == 0:
                world.drain()
                metrics.clear_metrics()
        world.drain()
    tally.seconds = time.perf_counter() - started
    for key in tally.accepted:
        status = world.final_status(key)
        tally.final[status] += 1
        if status not in ("INVOICED", "REJECTED"):
            tally.fail("final", f"{key} answered 202 ends {status}")
    tally.fynd_calls = len(world.ports.fynd.calls)
    tally.sent_twice = world.sent_twice()
    if tally.sent_twice:
        tally.fail("fynd", f"{tally.sent_twice} keys reached Fynd twice with no answer lost")
    return tally


def one_request(rng: random.Random, ingest: Ingest, world: World, tally: Tally) -> None:
    before = world.footprint()
    if rng.random() < 0.15:
        kind, answer = status_request(rng, ingest, tally.known)
        clean = False
        tally.bodies["status_get"] += 1
        tally.signatures[kind] += 1
    else:
        kind, body, clean = body_text(rng)
        how, options = hostile_signature(rng, ingest, body)
        clean = clean and how == "signed"
        tally.bodies[kind] += 1
        tally.signatures[how] += 1
        kind = f"{kind}/{how}"
        try:
            answer = ingest.post(body, **options)
        except Exception as error:  # an exception out of the API is Lambda's 5xx
            tally.requests += 1
            tally.statuses[599] += 1
            tally.fail(kind, f"{type(error).__name__}: {error}"[:300])
            return
    tally.requests += 1
    tally.statuses[answer.status] += 1
    if answer.status >= 500:
        tally.fail(kind, f"{answer.status} {str(answer.body)[:200]}")
    elif answer.status != 202 and not (200 <= answer.status < 300) and world.footprint() != before:
        tally.fail(kind, f"{answer.status} changed the ledger or the queue")
    if clean and answer.status not in (202, 409):
        tally.fail(kind, f"a clean signed POST got {answer.status}: {str(answer.body)[:200]}")
    if answer.status == 202 and isinstance(answer.body, dict) and "invoices" in answer.body:
        for item in answer.body["invoices"]:
            key = InvoiceKey(item["orderId"], InvoiceType(item["invoiceType"]))
            if key not in tally.accepted:
                tally.accepted.add(key)
                tally.known.append(key)
            problem = world.check_accepted(key)
            if problem:
                tally.fail(kind, problem)


@contextlib.contextmanager
def quiet() -> Any:
    """The relay logs each refusal and prints metrics: 100,000 times is noise, not evidence."""
    level = logger.log_level
    logger.setLevel("CRITICAL")
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield sink
    finally:
        logger.setLevel(level)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED") or time.time()))
    arguments = parser.parse_args()
    tally = run(arguments.requests, arguments.seed)
    print(tally.summary())
    print(f"  again: python tests/ingest_fuzz.py --requests {arguments.requests} --seed {arguments.seed}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
