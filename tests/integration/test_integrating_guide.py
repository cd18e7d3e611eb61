"""The signing code in docs/integrating.md works as printed, in Python, Node and shell:

- its POST is accepted (202) by the local relay, which verifies with the reference package;
- its status GET is signed over the request line exactly as it reached the server: a
  recording server on 127.0.0.1 checks that with the reference package (the contract's
  scheme, relay-interface.md §2).
"""

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from factories import invoice_dict
from relay_client import RelayClient

GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "integrating.md").read_text()


def snippet(name: str) -> str:
    found = re.search(rf"<!-- tested: {name} -->\n```\w+\n(.*?)```", GUIDE, re.DOTALL)
    assert found, f"no tested {name} snippet in docs/integrating.md"
    return found.group(1)


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET 200 `{}` and keeps the request line's target and headers."""

    seen: list[tuple[str, dict[str, str]]]

    def do_GET(self) -> None:
        self.seen.append((self.path, {name.lower(): value for name, value in self.headers.items()}))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    seen: list[tuple[str, dict[str, str]]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def assert_signed_over_request_line(secret: str, seen: list[tuple[str, dict[str, str]]]) -> None:
    ((target, headers),) = seen
    assert target == "/v1/invoices/FY-G1?invoiceType=sale"
    Webhook(secret).verify(f"GET {target}", headers, json_parse=False)  # raises if not


def test_the_python_snippet_posts_and_signs_the_status_request_line(
    relay: RelayClient, recorder: Any
) -> None:
    # Given the guide's Python code
    namespace: dict[str, Any] = {}
    exec(snippet("python"), namespace)  # noqa: S102 - the documentation's own code
    # When it posts an invoice to the relay, and asks a recording server for a status
    status, body = namespace["post_invoices"](relay.pipeline.api_url, relay.secret, invoice_dict("FY-G1"))
    url, seen = recorder
    namespace["invoice_status"](url, relay.secret, "FY-G1")
    # Then the relay accepted the POST, and the GET is signed over its request line as sent
    assert (status, body["invoices"][0]["status"]) == (202, "QUEUED")
    assert_signed_over_request_line(relay.secret, seen)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_node_snippet_posts_and_signs_the_status_request_line(relay: RelayClient, recorder: Any) -> None:
    # Given the guide's Node code, run by node
    url, seen = recorder
    script = snippet("node") + (
        "(async () => {\n"
        f"  const posted = await postInvoices({json.dumps(relay.pipeline.api_url)}, process.env.SECRET,"
        f" {json.dumps(invoice_dict('FY-G1'))});\n"
        f"  await invoiceStatus({json.dumps(url)}, process.env.SECRET, 'FY-G1');\n"
        "  console.log(JSON.stringify(posted));\n"
        "})();\n"
    )
    # When it posts an invoice and asks for a status
    done = subprocess.run(
        ["node", "-e", script],
        capture_output=True,
        text=True,
        env={"SECRET": relay.secret},
        timeout=60,
        check=False,
    )
    # Then the relay accepted the POST, and the GET is signed over its request line as sent
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == 202
    assert_signed_over_request_line(relay.secret, seen)


def test_the_shell_snippet_posts_and_signs_the_status_request_line(
    relay: RelayClient, recorder: Any, tmp_path: Path
) -> None:
    # Given the guide's shell code, with an invoice file; its GET goes to the recording server
    invoice_file = tmp_path / "invoice.json"
    invoice_file.write_text(json.dumps(invoice_dict("FY-G1"), indent=2) + "\n")
    url, seen = recorder
    script = snippet("shell").replace('"$API_URL$path"', '"$STATUS_URL$path"').replace("FY-10001", "FY-G1")
    # When it runs
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "SECRET": relay.secret,
            "API_URL": relay.pipeline.api_url,
            "STATUS_URL": url,
            "FILE": str(invoice_file),
        },
        timeout=60,
        check=False,
    )
    # Then the relay accepted the POST (its answer comes first), and the GET is signed over its line
    assert done.returncode == 0, done.stderr
    posted = json.loads(done.stdout.removesuffix("{}"))
    assert posted["invoices"][0]["status"] == "QUEUED"
    assert_signed_over_request_line(relay.secret, seen)
