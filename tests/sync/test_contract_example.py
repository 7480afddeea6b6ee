"""The order contract example ships inside the repository, and every copy of it is the same."""

from __future__ import annotations

import json
from pathlib import Path

from edge.sim.orders import example_order

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "docs" / "order-example.json"


def test_the_contract_example_ships_in_docs_and_the_copies_match_it() -> None:
    """docs/order-example.json is the backend's contract example; the test fixture and the simulator's example are
    the same order."""
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert json.loads((ROOT / "tests" / "fixtures" / "order-example.json").read_text(encoding="utf-8")) == shipped
    simulated = example_order()
    taken = {"created_at": shipped["created_at"], "fulfilment": shipped["fulfilment"]}  # the sim takes it "now"
    assert simulated | taken == shipped


def test_no_document_points_outside_the_repository_for_the_contract() -> None:
    """README, docs and the OpenAPI document name the shipped example, never a path outside the repository."""
    documents = [ROOT / "README.md", ROOT / "edge" / "api" / "openapi.yaml", *sorted((ROOT / "docs").glob("*.md"))]
    outside = [p.name for p in documents if "shared/contract" in p.read_text(encoding="utf-8")]
    assert outside == []
    assert "docs/order-example.json" in (ROOT / "docs" / "central-api.md").read_text(encoding="utf-8")
