"""Layout directives: each one function in one table, saying how a template writes it; the docs list them all."""

from __future__ import annotations

import re
from pathlib import Path

from edge.printing.layout import DIRECTIVES

DOCS = Path(__file__).parents[2] / "docs" / "printing.md"


def test_every_directive_is_described_where_it_is_defined_and_in_the_docs() -> None:
    """Each directive's function opens with how a template writes it, and docs/printing.md names every one."""
    listed = re.search(r"The layout directives \(([^)]*)\)", DOCS.read_text(encoding="utf-8").replace("\n", " "))
    assert listed is not None
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == set(DIRECTIVES)
    for name, run in DIRECTIVES.items():
        assert (run.__doc__ or "").startswith(name), name
