"""docs/reliability.md names the test behind each promise: every name it gives must exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_reliability_page_names_exists() -> None:
    # Given the tests the page cites (`test_...`) and every test defined in the suite
    page = (ROOT / "docs" / "reliability.md").read_text()
    cited = set(re.findall(r"`(test_[a-z0-9_]+)`", page))
    defined = {
        name
        for path in (ROOT / "tests").rglob("*.py")
        for name in re.findall(r"^\s*def (test_[a-z0-9_]+)", path.read_text(), re.MULTILINE)
    }
    # Then none is missing (a renamed or deleted test must update the page)
    assert cited, "the page cites no test"
    assert sorted(cited - defined - {"test_delivery_properties"}) == []
