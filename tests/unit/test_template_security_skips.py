"""checkov runs in `make lint` over template.yaml; every check the template does not pass is
skipped next to its resource with its reason, and the README's security section names it."""

import re
from pathlib import Path
from typing import Any

from relay_local.stack import load_template

ROOT = Path(__file__).resolve().parents[2]


def skips() -> list[tuple[str, str, str]]:
    found = []
    for logical_id, resource in load_template()["Resources"].items():
        checkov: dict[str, Any] = (resource.get("Metadata") or {}).get("checkov") or {}
        found += [
            (logical_id, str(skip.get("id")), str(skip.get("comment") or ""))
            for skip in checkov.get("skip", [])
        ]
    return found


def test_every_checkov_skip_names_a_check_and_gives_its_reason() -> None:
    # Given every checkov skip in the template
    found = skips()
    assert found, "the template skips no checkov check"
    # Then each names one check and says why in a sentence, not a word
    for logical_id, check, reason in found:
        assert re.fullmatch(r"CKV_AWS_\d+", check), (logical_id, check)
        assert len(reason.split()) >= 15, (logical_id, check, reason)


def test_the_readme_security_section_lists_every_skipped_check() -> None:
    # Given the README's security section
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    # Then every check the template skips is named there with its reason
    assert {check for _, check, _ in skips()} <= set(re.findall(r"`(CKV_AWS_\d+)", section))
