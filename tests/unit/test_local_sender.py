"""`make send` / `make status` when nothing answers: the message names the address tried and
where it came from, because the usual cause is a `make run` on another port."""

import urllib3

from relay_local.sender import not_answering

REFUSED = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]


def test_with_relay_api_url_unset_it_names_the_default_port_and_the_variable_to_set() -> None:
    text = not_answering("http://127.0.0.1:3000/v1/invoices", REFUSED, {})
    assert text.startswith("nothing answered at 127.0.0.1:3000 (NewConnectionError)")
    assert "RELAY_API_URL unset" in text
    assert "set RELAY_API_URL to the `API` line of its banner" in text


def test_with_relay_api_url_set_it_names_that_value() -> None:
    text = not_answering(
        "http://127.0.0.1:3101/v1/invoices/FY-1", REFUSED, {"RELAY_API_URL": "http://127.0.0.1:3101"}
    )
    assert "nothing answered at 127.0.0.1:3101 " in text
    assert "that address is RELAY_API_URL=http://127.0.0.1:3101" in text
