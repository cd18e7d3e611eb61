"""docs/README.md lists every page of docs/, and no page speaks in the project's internal
review names ("breach 15"): a reader cannot look those up."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), DOCS / "openapi.yaml"]


def test_the_index_links_every_page_and_every_link_resolves() -> None:
    # Given docs/README.md and every page of docs/
    index = (DOCS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([^)#]+)\)", index))
    # Then each page but the index is linked, and each link names a file that exists
    wanted = {
        str(page.relative_to(DOCS))
        for page in [*DOCS.glob("*.md"), DOCS / "openapi.yaml", DOCS / "erpnext" / "README.md"]
        if page.name != "README.md" or page.parent != DOCS
    }
    assert sorted(wanted - linked) == []
    assert sorted(link for link in linked if not (DOCS / link).exists()) == []


def test_no_page_uses_internal_breach_names() -> None:
    found = [
        f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
        for page in pages()
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if re.search(r"breach", line, re.IGNORECASE)
    ]
    assert found == []
